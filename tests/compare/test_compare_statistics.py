"""The comparison's statistics are rliable's: IQM, mean, per-task means and the probability of improvement
on a fixed score matrix, checked against hand-computed values, against rliable called directly, and against
a stratified bootstrap written out here."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from rlmtl.compare.spec import Bootstrap
from rlmtl.compare.statistics import method_statistics, probability_of_improvement

pytest.importorskip("rliable")
from rliable import library, metrics  # noqa: E402

TASKS = ["a", "b"]
# [runs, tasks]: per-task success of 4 seeds
UNIFORM = np.array([[0.2, 0.9], [0.4, 0.8], [0.6, 1.0], [0.1, 0.7]])
FAMO = np.array([[0.5, 0.9], [0.3, 0.9], [0.8, 1.0], [0.6, 0.6]])
BOOTSTRAP = Bootstrap(reps=2000, seed=3, confidence=0.95)


@pytest.fixture(scope="module")
def stats():
    return method_statistics({"uniform": UNIFORM, "famo": FAMO, "pcgrad": np.zeros((0, 2))}, TASKS, "uniform", BOOTSTRAP)


def test_point_estimates_by_hand(stats):
    # IQM: the 8 scores of uniform sorted are .1 .2 .4 .6 .7 .8 .9 1.0; the middle 4 are .4 .6 .7 .8
    assert stats["uniform"]["iqm"] == pytest.approx((0.4 + 0.6 + 0.7 + 0.8) / 4)
    # famo sorted: .3 .5 .6 .6 .8 .9 .9 1.0 -> .6 .6 .8 .9
    assert stats["famo"]["iqm"] == pytest.approx((0.6 + 0.6 + 0.8 + 0.9) / 4)
    assert stats["famo"]["mean"] == pytest.approx(FAMO.mean())
    assert stats["famo"]["per_task"]["a"]["mean"] == pytest.approx(0.55)
    # P(famo > uniform) per task, ties half: task a: famo .5 .3 .8 .6 vs uniform .2 .4 .6 .1
    #   .5 beats .2 .4 .1 (3); .3 beats .2 .1 (2); .8 beats all (4); .6 beats .2 .4 .1 and ties .6 (3.5) -> 12.5 / 16
    # task b: famo .9 .9 1.0 .6 vs uniform .9 .8 1.0 .7
    #   .9: beats .8 .7, ties .9 (2.5); .9: 2.5; 1.0: beats .9 .8 .7, ties 1.0 (3.5); .6: 0 -> 8.5 / 16
    assert stats["famo"]["improvement"]["probability"] == pytest.approx((12.5 / 16 + 8.5 / 16) / 2)
    assert stats["famo"]["improvement"]["over"] == "uniform"
    assert stats["uniform"]["improvement"] is None  # the baseline itself
    assert "pcgrad" not in stats  # no runs yet
    assert stats["famo"]["runs"] == 4


def test_intervals_are_rliables_stratified_bootstrap(stats):
    np.random.seed(BOOTSTRAP.seed)  # rliable draws from numpy's global generator
    _, direct = library.get_interval_estimates(
        {"uniform": UNIFORM, "famo": FAMO}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=BOOTSTRAP.reps
    )
    assert stats["famo"]["iqm_ci"] == pytest.approx(direct["famo"][:, 0].tolist())
    assert stats["uniform"]["iqm_ci"] == pytest.approx(direct["uniform"][:, 0].tolist())
    np.random.seed(BOOTSTRAP.seed)
    _, pairs = library.get_interval_estimates({"famo": [FAMO, UNIFORM]}, metrics.probability_of_improvement, reps=BOOTSTRAP.reps)
    assert stats["famo"]["improvement"]["ci"] == pytest.approx(pairs["famo"].ravel().tolist())


def test_intervals_match_a_stratified_bootstrap_written_out(stats):
    """Resample each task's column over runs (tasks fixed), 2.5th and 97.5th percentiles of the IQM."""
    generator = np.random.default_rng(0)
    runs = FAMO.shape[0]
    resampled = []
    for _ in range(5000):
        rows = generator.integers(0, runs, size=FAMO.shape)
        resampled.append(scipy.stats.trim_mean(FAMO[rows, np.arange(FAMO.shape[1])], 0.25, axis=None))
    low, high = np.percentile(resampled, [2.5, 97.5])
    assert stats["famo"]["iqm_ci"] == pytest.approx([low, high], abs=0.03)
    assert stats["famo"]["iqm_ci"][0] <= stats["famo"]["iqm"] <= stats["famo"]["iqm_ci"][1]
    for task in TASKS:
        row = stats["famo"]["per_task"][task]
        assert row["ci"][0] <= row["mean"] <= row["ci"][1]


def test_seeded_reproducible_and_the_global_generator_left_alone():
    bootstrap = Bootstrap(reps=300, seed=3)
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = method_statistics({"uniform": UNIFORM, "famo": FAMO}, TASKS, "uniform", bootstrap)
    assert np.random.rand() == expected_next
    second = method_statistics({"uniform": UNIFORM, "famo": FAMO}, TASKS, "uniform", bootstrap)
    assert first == second
    other = method_statistics({"uniform": UNIFORM, "famo": FAMO}, TASKS, "uniform", Bootstrap(reps=300, seed=4))
    assert other["famo"]["iqm_ci"] != first["famo"]["iqm_ci"]


def test_probability_of_improvement_is_rliables():
    generator = np.random.default_rng(5)
    for runs_x, runs_y in [(3, 3), (2, 5), (1, 4)]:
        # success rates of 4 episodes: many ties
        x, y = generator.integers(0, 5, (runs_x, 7)) / 4, generator.integers(0, 5, (runs_y, 7)) / 4
        assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y), abs=1e-12)
    assert probability_of_improvement(UNIFORM, UNIFORM) == metrics.probability_of_improvement(UNIFORM, UNIFORM) == 0.5


def test_one_run_gives_a_point_interval():
    stats = method_statistics({"uniform": UNIFORM[:1], "famo": FAMO[:1]}, TASKS, "uniform", Bootstrap(reps=200))
    assert stats["famo"]["iqm_ci"][0] == stats["famo"]["iqm_ci"][1] == pytest.approx(stats["famo"]["iqm"])
