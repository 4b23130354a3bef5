"""Imbalanced data (`data.train_demos`): a task trains on only its first N demos, with the
statistics of those demos; bad counts and unknown tasks are refused naming the key."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_runs import TASKS, write_config, write_tiny_dataset

from rlmtl.config import load_config
from rlmtl.data.dataset import DatasetError, iter_episodes, load_dataset, summary_stats
from rlmtl.errors import ConfigError
from rlmtl.training.trainer import Trainer


def test_a_limited_task_keeps_its_first_demos_and_their_statistics(tmp_path):
    path = write_tiny_dataset(tmp_path / "data.h5")
    full = load_dataset(path, TASKS, ["state"], 4)
    limited = load_dataset(path, TASKS, ["state"], 4, demo_limits={"push-v3": 1})
    first = next(iter_episodes(path, "push-v3"))
    assert [t.num_demos for t in limited.per_task] == [2, 1, 2]
    np.testing.assert_array_equal(limited.per_task[1].actions, first.actions)
    np.testing.assert_array_equal(limited.per_task[1].observations["state"], first.observations["state"])
    for key, values in (("state", first.observations["state"]), ("actions", first.actions)):
        for name, expected in summary_stats(values).items():
            np.testing.assert_array_equal(limited.per_task[1].stats[key][name], expected)
    # the other tasks are read as without a limit
    for index in (0, 2):
        np.testing.assert_array_equal(limited.per_task[index].actions, full.per_task[index].actions)
        np.testing.assert_array_equal(limited.per_task[index].stats["state"]["mean"], full.per_task[index].stats["state"]["mean"])
    with pytest.raises(DatasetError, match=r"data\.h5: task 'push-v3' has 2 demos, fewer than data\.train_demos\.push-v3 = 3"):
        load_dataset(path, TASKS, ["state"], 4, demo_limits={"push-v3": 3})


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "true", ".nan", "'3'"])
def test_a_bad_count_is_refused_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match=r"'data\.train_demos\.push-v3' must be a whole number of demos >= 1"):
        load_config(write_config(tmp_path, "x", "uniform"), [f"data.train_demos={{push-v3: {value}}}"])


def test_training_uses_the_limits_and_refuses_a_task_it_does_not_run(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")
    config = load_config(write_config(tmp_path, "imbalanced", "uniform", steps=2), ["data.train_demos={reach-v3: 1}"])
    trainer = Trainer(config, progress=False)
    trainer.run()
    first = next(iter_episodes(tmp_path / "data.h5", "reach-v3"))
    np.testing.assert_allclose(trainer.parts.agent.obs_mean[0].numpy(), first.observations["state"].astype(np.float64).mean(0), rtol=1e-5)
    wrong = load_config(write_config(tmp_path, "wrong", "uniform", steps=2), ["data.train_demos={window-open-v3: 1}"])
    with pytest.raises(ConfigError, match=r"'data\.train_demos\.window-open-v3': 'window-open-v3' is not a task of this run"):
        Trainer(wrong, progress=False)
