import numpy as np
import pytest

from rlmtl.tag.grouping import brute_force_groupings, search_groupings


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


def test_ranking_is_sorted_distinct_and_monotone_in_the_budget():
    affinity = np.random.default_rng(3).normal(size=(7, 7))
    results = search_groupings(affinity, top=4)
    previous = -np.inf
    for k, ranked in results.items():
        scores = [g.score for g in ranked]
        assert scores == sorted(scores, reverse=True)
        assert len({g.groups for g in ranked}) == len(ranked)
        assert all(len(g.groups) <= k and all(len(s) >= 2 for s in g.groups) for g in ranked)
        assert all(set().union(*g.groups) == set(range(7)) for g in ranked)
        assert scores[0] >= previous - 1e-12
        previous = scores[0]


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        search_groupings(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        search_groupings(np.full((3, 3), np.nan))
