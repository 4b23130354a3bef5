"""Task grouping search of TAG (Fifty et al., "Efficiently Identifying Task Groupings for
Multi-Task Learning", NeurIPS 2021, arXiv 2109.04617), solved exactly.

Input: an affinity matrix `affinity[i, j]` = how much a step on task i's gradient lowers task j's
loss (TAG's Z[i -> j], source i, recipient j). As in TAG's network-selection notebook, a group S
(one network, |S| >= 2) serves each member a with the mean affinity a receives from the others,
score_S(a) = mean_{b in S, b != a} affinity[b, a]; a task may belong to several groups and is
served by its best one; a selection of at most k groups must cover every task and maximises
sum_a max_{S chosen, S contains a} score_S(a) (reported as the mean over tasks).

TAG's notebook enumerates combinations of subsets, which does not scale to K = 10. Exact
reformulation used here: the tasks each chosen group SERVES form a partition of the tasks, and
for a served block T the best group is best(T) = max over S >= T, |S| >= 2, of sum_{a in T} score_S(a).
So the optimum is the best partition of the K tasks into at most k blocks under block value
best(T): a dynamic program over subsets (3^K steps; K = 10 runs in about a second in numpy), that
keeps the `top` best solutions of every state to rank alternatives.

Above `EXACT_MAX_TASKS` tasks (MT50: K = 50) 3^K is out of reach, and the search keeps to groups
that do not overlap (each group serves its own members) and finds them by local search
(`local_search_groupings`): from seeded random partitions, move one task to another group or swap
two tasks while the score rises. Its solutions are lower bounds of the exact optimum; with
overlapping groups allowed, a task can only gain.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np


# the exact search's table has 2^K rows of K scores and its dynamic program 3^K steps
EXACT_MAX_TASKS = 16


@dataclass(frozen=True)
class Grouping:
    """k networks (groups of task indices), and each task's serving group."""

    groups: tuple[tuple[int, ...], ...]
    score: float  # mean over tasks of the affinity each receives in its serving group

    def named(self, tasks: list[str]) -> list[list[str]]:
        return [[tasks[i] for i in group] for group in self.groups]


def _group_scores(affinity: np.ndarray) -> np.ndarray:
    """score[S, a] for every subset bitmask S (|S| >= 2) and member a; -inf elsewhere."""
    k = affinity.shape[0]
    size = 1 << k
    score = np.full((size, k), -np.inf)
    for mask in range(size):
        members = [i for i in range(k) if mask >> i & 1]
        if len(members) < 2:
            continue
        sub = affinity[np.ix_(members, members)]
        received = (sub.sum(axis=0) - np.diag(sub)) / (len(members) - 1)  # column a: from the others
        score[mask, members] = received
    return score


def _best_blocks(score: np.ndarray, num_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """best(T) and the group S achieving it, for every served block T (bitmask)."""
    size = 1 << num_tasks
    best = np.full(size, -np.inf)
    arg = np.zeros(size, dtype=np.int64)
    members = [np.array([i for i in range(num_tasks) if t >> i & 1]) for t in range(size)]
    full = size - 1
    for block in range(1, size):
        idx = members[block]
        rest = full ^ block
        sub = rest
        while True:  # every superset S = block | sub
            group = block | sub
            value = score[group, idx].sum()
            if value > best[block]:
                best[block], arg[block] = value, group
            if sub == 0:
                break
            sub = (sub - 1) & rest
    return best, arg


def search_groupings(affinity: np.ndarray, max_groups: int | None = None, top: int = 3) -> dict[int, list[Grouping]]:
    """For every budget k = 1..max_groups, the `top` best groupings with at most k groups.

    Args:
        affinity: [K, K] float, affinity[i, j] = gain of task j from a step on task i
            (the diagonal is ignored).
        max_groups: largest k (default K).
        top: how many ranked solutions to keep per k (distinct sets of groups).
    Returns:
        {k: [Grouping, ...] best first}. The score of k is non-decreasing in k.
    """
    affinity = np.asarray(affinity, dtype=np.float64)
    num_tasks = affinity.shape[0]
    if affinity.shape != (num_tasks, num_tasks) or num_tasks < 2:
        raise ValueError(f"affinity must be a square matrix over >= 2 tasks, got shape {affinity.shape}")
    if not np.isfinite(affinity).all():
        raise ValueError("affinity contains non-finite values")
    max_groups = num_tasks if max_groups is None else max_groups
    if num_tasks > EXACT_MAX_TASKS:
        return local_search_groupings(affinity, max_groups, top)
    best, arg = _best_blocks(_group_scores(affinity), num_tasks)
    size = 1 << num_tasks
    keep = max(top * 4, top)  # extra candidates: different block partitions can map to the same groups
    # states[j][mask] = best solutions partitioning `mask` into exactly j served blocks: (value, blocks)
    states: list[dict[int, list[tuple[float, tuple[int, ...]]]]] = [{0: [(0.0, ())]}]
    for j in range(1, min(max_groups, num_tasks) + 1):
        layer: dict[int, list[tuple[float, tuple[int, ...]]]] = {}
        previous = states[j - 1]
        for mask in range(1, size):
            low = mask & -mask
            candidates: list[tuple[float, tuple[int, ...]]] = []
            rest = mask ^ low
            sub = rest
            while True:  # blocks containing the lowest task of `mask`
                block = low | sub
                if np.isfinite(best[block]):
                    for value, blocks in previous.get(mask ^ block, ()):
                        candidates.append((value + best[block], blocks + (block,)))
                if sub == 0:
                    break
                sub = (sub - 1) & rest
            if candidates:
                candidates.sort(key=lambda c: -c[0])
                layer[mask] = candidates[:keep]
        states.append(layer)
    full = size - 1
    results: dict[int, list[Grouping]] = {}
    pool: list[tuple[float, tuple[int, ...]]] = []
    for k in range(1, max_groups + 1):
        if k < len(states):
            pool = pool + states[k].get(full, [])
        ranked: list[Grouping] = []
        seen: set[tuple[tuple[int, ...], ...]] = set()
        for value, blocks in sorted(pool, key=lambda c: -c[0]):
            groups = tuple(sorted({_indices(arg[b]) for b in blocks}))
            if groups in seen:
                continue
            seen.add(groups)
            ranked.append(Grouping(groups=groups, score=float(value) / num_tasks))
            if len(ranked) == top:
                break
        results[k] = ranked
    return results


def serving_groups(affinity: np.ndarray, groups: list[list[int]] | tuple[tuple[int, ...], ...]) -> list[int]:
    """For every task, the index of the group that serves it: the group containing it whose other
    members give it the highest mean affinity (a task alone in a group receives 0). Ties go to the
    earlier group. A task in no group raises ValueError."""
    affinity = np.asarray(affinity, dtype=np.float64)
    serve: list[int] = []
    for task in range(affinity.shape[0]):
        best, best_score = -1, -np.inf
        for index, group in enumerate(groups):
            if task not in group:
                continue
            others = [b for b in group if b != task]
            score = float(np.mean([affinity[b, task] for b in others])) if others else 0.0
            if score > best_score:
                best, best_score = index, score
        if best < 0:
            raise ValueError(f"task {task} is in no group")
        serve.append(best)
    return serve


def _indices(mask: int | np.integer) -> tuple[int, ...]:
    mask = int(mask)
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


def brute_force_groupings(affinity: np.ndarray, max_groups: int) -> Grouping:
    """The notebook's exhaustive search (for tests on small K): every selection of at most
    `max_groups` subsets (|S| >= 2) covering all tasks."""
    affinity = np.asarray(affinity, dtype=np.float64)
    num_tasks = affinity.shape[0]
    score = _group_scores(affinity)
    subsets = [m for m in range(1, 1 << num_tasks) if bin(m).count("1") >= 2]
    best_value, best_groups = -np.inf, ()
    for k in range(1, max_groups + 1):
        for chosen in combinations(subsets, k):
            if np.bitwise_or.reduce(chosen) != (1 << num_tasks) - 1:
                continue
            value = score[list(chosen)].max(axis=0).sum()
            if value > best_value + 1e-12:
                best_value, best_groups = value, tuple(sorted(_indices(m) for m in chosen))
    return Grouping(groups=best_groups, score=float(best_value) / num_tasks)


def partition_score(affinity: np.ndarray, labels: np.ndarray) -> float:
    """Mean over tasks of the affinity each receives from the other members of its own group
    (groups that do not overlap, given as a label per task [K]; every group has >= 2 members)."""
    affinity = np.asarray(affinity, dtype=np.float64)
    total = 0.0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        within = affinity[np.ix_(members, members)]
        total += (within.sum() - np.trace(within)) / (len(members) - 1)
    return total / len(labels)


def local_search_groupings(affinity: np.ndarray, max_groups: int, top: int = 3, restarts: int = 64, seed: int = 0) -> dict[int, list[Grouping]]:
    """`search_groupings` for many tasks: for every k = 1..max_groups, the `top` best partitions
    into at most k groups of >= 2 tasks that `restarts` local searches from seeded random
    partitions reach (the same answer for the same input). A group's value is the sum over its
    members of the mean affinity each receives from the others, W(S) / (|S| - 1) with W(S) the sum
    of S's off-diagonal entries; a move (one task to another group) or a swap (two tasks of two
    groups) is taken while it raises the total."""
    affinity = np.asarray(affinity, dtype=np.float64)
    num_tasks = affinity.shape[0]
    symmetric = affinity + affinity.T
    np.fill_diagonal(symmetric, 0.0)
    rng = np.random.default_rng(seed)
    found: dict[int, dict[tuple[tuple[int, ...], ...], float]] = {}
    for groups in range(1, min(max_groups, num_tasks // 2) + 1):
        solutions = found.setdefault(groups, {})
        for _ in range(restarts if groups > 1 else 1):  # one group has one partition
            labels = _improve(symmetric, _random_partition(rng, num_tasks, groups), groups)
            key = tuple(sorted(tuple(int(i) for i in np.flatnonzero(labels == g)) for g in range(groups)))
            solutions[key] = partition_score(affinity, labels)
    results: dict[int, list[Grouping]] = {}
    pool: dict[tuple[tuple[int, ...], ...], float] = {}
    for k in range(1, max_groups + 1):
        pool.update(found.get(k, {}))
        ranked = sorted(pool.items(), key=lambda item: (-item[1], item[0]))[:top]
        results[k] = [Grouping(groups=groups, score=score) for groups, score in ranked]
    return results


def _random_partition(rng: np.random.Generator, num_tasks: int, groups: int) -> np.ndarray:
    """Labels [K] in 0..groups-1, every group with >= 2 tasks."""
    labels = np.concatenate([np.repeat(np.arange(groups), 2), rng.integers(0, groups, num_tasks - 2 * groups)])
    return rng.permutation(labels)


def _improve(symmetric: np.ndarray, labels: np.ndarray, groups: int) -> np.ndarray:
    """Moves and swaps of single tasks while the total value rises (first improvement, in a fixed order).

    With `link[t, g]` = sum over the members b of group g (b != t) of A[t, b] + A[b, t], a group's
    W(S) is half the sum of its members' links."""
    labels = labels.copy()
    onehot = np.eye(groups)[labels]  # [K, G]
    link = symmetric @ onehot  # [K, G]
    sizes = onehot.sum(axis=0)
    within = 0.5 * (link * onehot).sum(axis=0)  # W(S) per group [G]

    def value(w: np.ndarray, n: np.ndarray) -> float:
        return float((w / (n - 1)).sum())

    def relabel(task: int, old: int, new: int) -> None:
        labels[task] = new
        link[:, old] -= symmetric[:, task]
        link[:, new] += symmetric[:, task]

    improved = True
    while improved:
        improved = False
        current = value(within, sizes)
        for task in range(len(labels)):
            old = labels[task]
            if sizes[old] <= 2:
                continue
            for new in range(groups):
                if new == old:
                    continue
                w, n = within.copy(), sizes.copy()
                w[old] -= link[task, old]
                w[new] += link[task, new]
                n[old] -= 1
                n[new] += 1
                if value(w, n) > current + 1e-12:
                    within, sizes = w, n
                    relabel(task, old, new)
                    current, improved = value(w, n), True
                    break
        for first in range(len(labels)):
            for second in range(first + 1, len(labels)):
                a, b = labels[first], labels[second]
                if a == b:
                    continue
                pair = symmetric[first, second]
                w = within.copy()
                w[a] += link[second, a] - link[first, a] - pair
                w[b] += link[first, b] - link[second, b] - pair
                if value(w, sizes) > current + 1e-12:
                    within = w
                    relabel(first, a, b)
                    relabel(second, b, a)
                    current, improved = value(w, sizes), True
    return labels
