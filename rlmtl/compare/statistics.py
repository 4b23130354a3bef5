"""Few-seed statistics of a comparison, computed by rliable (Agarwal et al. 2021, "Deep RL at the Edge of
the Statistical Precipice").

The scores of a method in a setting are a matrix [runs, tasks] of per-task success rates (one row per
seed). From it, with rliable's stratified bootstrap over runs (each task's column resampled
separately, tasks fixed) and percentile intervals:

- `iqm`: `metrics.aggregate_iqm`, the interquartile mean, the mean of the middle 50% of all
  runs x tasks scores (scipy's 25% trimmed mean of the flattened matrix);
- `mean`: `metrics.aggregate_mean`, the mean over tasks of the mean over runs;
- `per_task`: each task's mean over runs;
- `improvement`: the probability of improvement of a method over the baseline (rliable's
  `metrics.probability_of_improvement`, computed vectorised here: `probability_of_improvement`),
  P(X > Y) for a run X of the method and a run Y of the baseline on the same task (Mann-Whitney
  U / (n_x n_y), ties counted half), averaged over tasks; its interval from rliable's independent
  stratified bootstrap of the two matrices.

rliable draws its bootstrap indices from numpy's global generator (its `random_state` argument does
not reach `StratifiedBootstrap.update_indices`), so each call here seeds that generator with
`Bootstrap.seed` and puts its previous state back: the same scores give the same intervals.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

from rlmtl.compare.spec import Bootstrap
from rlmtl.errors import RlmtlError

INSTALL_HINT = "pip install 'rlmtl[compare]'"


def require_rliable() -> str:
    """rliable's version; RlmtlError (exit 2) with the install line when it cannot be imported."""
    try:
        import importlib.metadata

        import rliable.library  # noqa: F401  (imports arch, the bootstrap rliable builds on)
    except Exception as error:  # ImportError, or a broken arch / pandas pair
        raise RlmtlError(f"rlmtl compare computes its statistics with rliable, which cannot be imported ({error}): {INSTALL_HINT}") from None
    return importlib.metadata.version("rliable")


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval_estimates(
    scores: dict[str, Any], statistic: Callable[..., Any], bootstrap: Bootstrap
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's `get_interval_estimates` (stratified bootstrap, percentile intervals), seeded:
    (point estimates, intervals [2, ...]) by key."""
    from rliable import library

    with _seeded_numpy(bootstrap.seed):
        return library.get_interval_estimates(
            scores, statistic, method="percentile", reps=bootstrap.reps, confidence_interval_size=bootstrap.confidence
        )


def _iqm(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores)])


def _mean(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_mean(scores)])


def _per_task(scores: np.ndarray) -> np.ndarray:
    return np.mean(scores, axis=0)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's `metrics.probability_of_improvement` ([runs_x, tasks], [runs_y, tasks]): per task
    P(X > Y) + P(X = Y) / 2 over all pairs of runs (the Mann-Whitney U over n_x n_y), averaged over
    tasks. The same value (tested against rliable), from one broadcast comparison instead of a scipy
    call per task: the bootstrap calls it reps times per method, which took a minute per setting of
    six methods and ten tasks with rliable's function, and takes a second this way."""
    x, y = scores_x[:, None, :], scores_y[None, :, :]
    per_task = np.mean((x > y) + 0.5 * (x == y), axis=(0, 1))
    return float(np.mean(per_task))


def _improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> np.ndarray:
    return np.array([probability_of_improvement(scores_x, scores_y)])


def _interval(values: np.ndarray) -> list[float]:
    return [float(values[0]), float(values[1])]


def method_statistics(scores: dict[str, np.ndarray], tasks: list[str], baseline: str, bootstrap: Bootstrap) -> dict[str, dict[str, Any]]:
    """The statistics of every method of one setting: {method: {runs, iqm, iqm_ci, mean, mean_ci,
    per_task: {task: {mean, ci}}, improvement: {over, probability, ci} | None}}. `scores[m]` is
    [runs, tasks] (methods without runs are left out); `improvement` needs the baseline's scores."""
    scores = {method: matrix for method, matrix in scores.items() if len(matrix)}
    iqm, iqm_ci = interval_estimates(scores, _iqm, bootstrap)
    mean, mean_ci = interval_estimates(scores, _mean, bootstrap)
    per_task, per_task_ci = interval_estimates(scores, _per_task, bootstrap)
    pairs = {method: [matrix, scores[baseline]] for method, matrix in scores.items() if method != baseline and baseline in scores}
    improvement, improvement_ci = interval_estimates(pairs, _improvement, bootstrap) if pairs else ({}, {})
    result = {}
    for method, matrix in scores.items():
        result[method] = {
            "runs": int(matrix.shape[0]),
            "iqm": float(iqm[method][0]),
            "iqm_ci": _interval(iqm_ci[method][:, 0]),
            "mean": float(mean[method][0]),
            "mean_ci": _interval(mean_ci[method][:, 0]),
            "per_task": {
                task: {"mean": float(per_task[method][i]), "ci": _interval(per_task_ci[method][:, i])} for i, task in enumerate(tasks)
            },
            "improvement": None
            if method not in improvement
            else {"over": baseline, "probability": float(improvement[method][0]), "ci": _interval(improvement_ci[method][:, 0])},
        }
    return result
