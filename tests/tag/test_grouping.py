import itertools

import numpy as np
import pytest

from rlmtl.tag.grouping import brute_force_groupings, local_search_groupings, partition_score, search_groupings


@pytest.mark.parametrize("seed", range(4))
def test_exact_search_equals_the_notebooks_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_tasks = 5 if seed % 2 else 6
    affinity = rng.normal(size=(num_tasks, num_tasks))
    found = search_groupings(affinity, max_groups=3)
    for k in (1, 2, 3):
        reference = brute_force_groupings(affinity, k)
        assert found[k][0].score == pytest.approx(reference.score, abs=1e-12)


def test_planted_families_are_found():
    # tasks 0-4 help each other, 5-9 help each other, the families hurt each other
    family = np.repeat(np.arange(2), 5)
    affinity = np.where(family[:, None] == family[None, :], 0.5, -0.4)
    affinity += np.random.default_rng(0).normal(scale=0.05, size=affinity.shape)
    best_two = search_groupings(affinity, max_groups=2)[2][0]
    assert best_two.groups == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert best_two.named([f"t{i}" for i in range(10)])[1] == ["t5", "t6", "t7", "t8", "t9"]


def _assert_ranked(results, num_tasks):
    """Per budget k: sorted, distinct groupings of at most k groups of >= 2 tasks covering every
    task, the best score non-decreasing in k."""
    previous = -np.inf
    for k, ranked in results.items():
        scores = [g.score for g in ranked]
        assert scores == sorted(scores, reverse=True)
        assert len({g.groups for g in ranked}) == len(ranked)
        assert all(len(g.groups) <= k and all(len(s) >= 2 for s in g.groups) for g in ranked)
        assert all(set().union(*g.groups) == set(range(num_tasks)) for g in ranked)
        assert scores[0] >= previous - 1e-12
        previous = scores[0]


def test_ranking_is_sorted_distinct_and_monotone_in_the_budget():
    _assert_ranked(search_groupings(np.random.default_rng(3).normal(size=(7, 7)), top=4), 7)


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        search_groupings(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        search_groupings(np.full((3, 3), np.nan))


def _best_partition_by_enumeration(affinity, max_groups):
    """The best partition into at most `max_groups` groups of >= 2 tasks, by trying every labelling."""
    best = -np.inf
    for labels in itertools.product(range(max_groups), repeat=len(affinity)):
        labels = np.asarray(labels)
        sizes = np.bincount(labels)
        if labels[0] == 0 and not ((sizes > 0) & (sizes < 2)).any():
            best = max(best, partition_score(affinity, labels))
    return best


@pytest.mark.parametrize("seed", range(3))
def test_local_search_finds_the_best_partition_of_small_problems(seed):
    affinity = np.random.default_rng(seed).normal(size=(8, 8))
    found = local_search_groupings(affinity, max_groups=3)
    exact = search_groupings(affinity, max_groups=3)
    for k in (1, 2, 3):
        assert found[k][0].score == pytest.approx(_best_partition_by_enumeration(affinity, k), abs=1e-12)
        assert found[k][0].score <= exact[k][0].score + 1e-12  # overlapping groups can only gain


def test_many_tasks_use_the_local_search_and_find_planted_families():
    # 30 tasks (beyond the exact search's 2^K table) in 3 families that help each other
    family = np.repeat(np.arange(3), 10)
    affinity = np.where(family[:, None] == family[None, :], 0.3, -0.2)
    affinity += np.random.default_rng(1).normal(scale=0.1, size=affinity.shape)
    results = search_groupings(affinity, max_groups=3)
    assert results[3][0].groups == tuple(tuple(range(10 * f, 10 * f + 10)) for f in range(3))
    assert search_groupings(affinity, max_groups=3)[3] == results[3]  # seeded: the same answer again
    _assert_ranked(results, 30)
    # groups do not overlap above the exact search: each task in exactly one group
    assert all(sorted(i for group in g.groups for i in group) == list(range(30)) for ranked in results.values() for g in ranked)
