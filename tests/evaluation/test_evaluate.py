import pytest

from rlmtl.config import load_config
from rlmtl.data.collect import collect
from rlmtl.evaluation.evaluate import evaluate_checkpoint
from rlmtl.evaluation.results import summarise, wilson_interval
from rlmtl.evaluation.rollout import EpisodeOutcome
from rlmtl.evaluation.settings import EvalSettings
from rlmtl.training.trainer import train


def test_wilson_interval_known_values():
    low, high = wilson_interval(45, 50)
    assert low == pytest.approx(0.7864, abs=1e-3) and high == pytest.approx(0.9565, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summarise_counts_every_episode_once():
    outcomes = {(t, e): EpisodeOutcome(success=(t + e) % 2 == 0, steps=10 + e, scene_seed=e) for t in range(2) for e in range(4)}
    result = summarise(["a", "b"], 4, outcomes)
    assert result["per_task"]["a"]["successes"] == 2 and result["per_task"]["b"]["success_rate"] == 0.5
    assert result["overall"]["episodes"] == 8 and result["overall"]["success_rate"] == 0.5
    assert len(result["episodes"]) == 8


@pytest.mark.slow
def test_parallel_evaluation_equals_serial(tiny_config_file, tmp_path):
    path = tiny_config_file()
    collect(load_config(path), progress=False)
    run = train(load_config(path), progress=False)
    serial = evaluate_checkpoint(run.run_dir, EvalSettings(episodes_per_task=3, workers=1, envs_per_worker=1, progress=False))
    for workers, envs in ((2, 1), (1, 4), (2, 3)):  # batched: one policy call per step for a worker's envs
        parallel = evaluate_checkpoint(
            run.run_dir, EvalSettings(episodes_per_task=3, workers=workers, envs_per_worker=envs, progress=False)
        )
        assert serial["episodes"] == parallel["episodes"], (workers, envs)
        assert serial["per_task"] == parallel["per_task"]
