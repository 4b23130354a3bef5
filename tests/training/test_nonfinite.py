"""NaN/inf losses and gradients: the step is skipped on the device, counted, and the run stops
after train.max_nonfinite_steps in a row with a message naming the tasks and the steps."""

from __future__ import annotations

import json

import pytest
import torch
from synthetic_runs import TASKS, write_config, write_tiny_dataset

from rlmtl.config import load_config
from rlmtl.errors import RlmtlError
from rlmtl.training.nonfinite import NonFiniteMonitor
from rlmtl.training.trainer import Trainer
from rlmtl.weighting import MultiTaskBackward, make_weighting


class NaNAt:
    """Wraps a sampler: from global step `start` (1-based, through `stop`) task `task`'s observations are NaN."""

    def __init__(self, sampler, task: int, start: int, stop: int | None = None) -> None:
        self.sampler, self.task, self.start, self.stop = sampler, task, start, stop if stop is not None else start
        self.calls = 0

    def sample(self):
        self.calls += 1
        batch = self.sampler.sample()
        if self.start <= self.calls <= self.stop:
            batch["obs"] = {key: value.clone() for key, value in batch["obs"].items()}
            batch["obs"]["state"][self.task, 0, 0] = float("nan")
        return batch

    def __getattr__(self, name):
        return getattr(self.sampler, name)


def snapshot(trainer: Trainer) -> dict:
    """Parameters, optimizer state and weighting state, cloned."""
    optimizer = {id(p): {k: v.clone() for k, v in state.items()} for p, state in trainer.parts.optimizer.state.items()}
    return {
        "model": {k: v.clone() for k, v in trainer.parts.agent.state_dict().items()},
        "optimizer": optimizer,
        "weighting": {k: v.clone() for k, v in trainer.parts.weighting.state_dict().items()},
    }


def assert_same(a: dict, b: dict) -> None:
    for part in ("model", "weighting"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0, equal_nan=False, msg=f"{part}.{key} changed")
    assert a["optimizer"].keys() == b["optimizer"].keys()
    for pid in a["optimizer"]:
        for key, value in a["optimizer"][pid].items():
            torch.testing.assert_close(value, b["optimizer"][pid][key], rtol=0, atol=0, msg=f"optimizer {key} changed")


@pytest.fixture
def folder(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")
    return tmp_path


# every kind of method: loss-level with its own Adam (famo, uncertainty), lookahead (auto_lambda),
# gradient surgery (pcgrad), solvers (nash_mtl, cagrad), log-gradient buffer (db_mtl), gradnorm
@pytest.mark.parametrize("method", ["uniform", "famo", "uncertainty", "auto_lambda", "pcgrad", "nash_mtl", "cagrad", "db_mtl", "gradnorm"])
def test_a_nan_batch_skips_the_step_and_leaves_all_state_unchanged(folder, method):
    trainer = Trainer(load_config(write_config(folder, method, method, steps=4)), progress=False)
    trainer.parts.sampler = NaNAt(trainer.parts.sampler, task=1, start=3)
    for _ in range(2):
        trainer.train_step()
    before = snapshot(trainer)
    losses, weights = trainer.train_step()  # step 3: task 1's batch holds a NaN
    assert torch.isnan(losses).all() and torch.isnan(weights).all()  # logged as skipped, not as numbers
    assert_same(before, snapshot(trainer))
    assert int(trainer.parts.nonfinite.streak) == 1 and trainer.parts.nonfinite.take_skipped() == 1
    assert trainer.parts.nonfinite.streak_tasks.tolist() == [False, True, False]
    losses, _ = trainer.train_step()  # step 4: clean again, training moves on
    assert torch.isfinite(losses).all() and int(trainer.parts.nonfinite.streak) == 0
    after = trainer.parts.agent.state_dict()
    assert any(not torch.equal(after[k], before["model"][k]) for k in after)
    trainer.parts.weighting.check()  # no poisoned state (FAMO / DB-MTL would raise on a NaN they had kept)
    trainer.parts.nonfinite.check(trainer.parts.tasks)


def test_run_counts_skipped_steps_in_the_log(folder):
    trainer = Trainer(load_config(write_config(folder, "count", "famo", steps=6, log_every=3)), progress=False)
    trainer.parts.sampler = NaNAt(trainer.parts.sampler, task=0, start=2)
    trainer.run()
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite_steps"] for r in records] == [1, 0]
    assert all(v == v for r in records for v in r["loss"].values())  # means over the finite steps: no NaN


def test_stops_after_max_nonfinite_steps_naming_task_and_steps(folder):
    config = load_config(write_config(folder, "stop", "uniform", steps=20, log_every=10, checkpoint_every=10, max_nonfinite_steps=3))
    trainer = Trainer(config, progress=False)
    trainer.parts.sampler = NaNAt(trainer.parts.sampler, task=2, start=4, stop=8)
    with pytest.raises(RlmtlError, match=rf"steps 4\.\.6 were all non-finite.*max_nonfinite_steps=3.*task\(s\) {TASKS[2]}"):
        trainer.run()
    # detected at the first host read (step 10), before any checkpoint of the damaged stretch was written
    assert not list((trainer.run_dir / "checkpoints").glob("step_*.pt"))


def test_two_in_a_row_below_the_limit_do_not_stop(folder):
    config = load_config(write_config(folder, "below", "uniform", steps=8, log_every=4, max_nonfinite_steps=3))
    trainer = Trainer(config, progress=False)
    trainer.parts.sampler = NaNAt(trainer.parts.sampler, task=0, start=2, stop=3)
    result = trainer.run()
    assert result.step == 8


def test_a_nonfinite_gradient_with_finite_losses_is_caught(folder):
    config = load_config(write_config(folder, "grad", "uniform", steps=4, log_every=4, max_nonfinite_steps=1))
    trainer = Trainer(config, progress=False)
    weight = trainer.parts.agent.heads.weights[0]
    weight.register_hook(lambda grad: grad * float("inf"))  # the losses stay finite, the gradient does not
    with pytest.raises(RlmtlError, match="finite losses but a non-finite gradient"):
        trainer.run()


def test_engine_alone_flags_and_restores_without_a_host_sync():
    """Standalone MultiTaskBackward: found_inf and nonfinite_tasks are device tensors; FAMO's state is put back."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    balance = MultiTaskBackward(make_weighting("famo", 2), model.parameters(), skip_nonfinite=True)
    x = torch.randn(4, 3)

    def losses(poison: bool) -> torch.Tensor:
        out = model(x).pow(2).mean(0) + 0.1
        return out * torch.tensor([1.0, float("nan") if poison else 1.0])

    balance.backward(losses(False))
    balance.after_step(losses(False).detach())
    saved = {k: v.clone() for k, v in balance.weighting.state_dict().items()}
    model.zero_grad()
    balance.backward(losses(True))
    assert isinstance(balance.found_inf, torch.Tensor) and balance.found_inf.item() == 1.0
    assert balance.nonfinite_tasks.tolist() == [False, True]
    balance.after_step(losses(True).detach())
    for key, value in balance.weighting.state_dict().items():
        assert torch.equal(value, saved[key]), key
    balance.weighting.check()


def _flags(bad: bool, tasks: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(bad), torch.tensor(tasks)


def test_monitor_reports_the_first_streak_that_reached_the_limit():
    """Two streaks of the limit between two reads: the error names the first one and its tasks."""
    monitor = NonFiniteMonitor(num_tasks=2, limit=2, device=torch.device("cpu"))
    pattern = [(True, [True, False]), (True, [False, False]), (False, [False, False]), (True, [False, True]), (True, [False, True])]
    for step, (bad, tasks) in enumerate(pattern, start=1):
        monitor.record(*_flags(bad, tasks), step)
    assert monitor.take_skipped() == 4 and monitor.take_skipped() == 0
    with pytest.raises(RlmtlError, match=r"steps 1\.\.2 were all non-finite.*task\(s\) a\b"):
        monitor.check(["a", "b"])


def test_monitor_streak_continues_across_reads_and_checkpoints():
    """A streak read in its middle (a log step), or saved and restored (a checkpoint), goes on counting."""
    monitor = NonFiniteMonitor(num_tasks=2, limit=3, device=torch.device("cpu"))
    monitor.record(*_flags(True, [False, True]), 1)
    monitor.check(["a", "b"])  # below the limit
    assert monitor.streak == 1 and monitor.streak_tasks.tolist() == [False, True]
    restored = NonFiniteMonitor(num_tasks=2, limit=3, device=torch.device("cpu"))
    monitor.record(*_flags(True, [True, False]), 2)
    restored.load_state_dict(monitor.state_dict())
    restored.record(*_flags(True, [False, False]), 3)
    with pytest.raises(RlmtlError, match=r"steps 1\.\.3 were all non-finite.*task\(s\) a, b"):
        restored.check(["a", "b"])
    monitor.record(*_flags(False, [False, False]), 3)
    assert monitor.streak == 0 and monitor.streak_tasks.tolist() == [False, False]
    monitor.check(["a", "b"])


def test_nonfinite_check_matches_isfinite():
    """The engine's two-kernel check flags exactly what ~torch.isfinite flags, in every float dtype."""
    from rlmtl.weighting.engine import _nonfinite

    values = torch.tensor([0.0, 1.0, -1.0, 3e38, -3e38, float("inf"), -float("inf"), float("nan"), 1e-45])
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        assert torch.equal(_nonfinite(values.to(dtype)), ~torch.isfinite(values.to(dtype))), dtype
