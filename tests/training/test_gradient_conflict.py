"""Gradient-conflict diagnostics: the per-task gradient norms and cosine matrix equal those of K
separate backward passes, reach metrics.jsonl and TensorBoard for every kind of method, add no host
read to the training steps, change nothing in training and resume exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_runs import TASKS, write_config, write_tiny_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from toy_mtl import agent_batch, small_agent

from rlmtl.config import load_config
from rlmtl.errors import ConfigError
from rlmtl.training.gradient_conflict import GradientConflictMonitor, gradient_conflict
from rlmtl.training.trainer import Trainer, train
from rlmtl.weighting import MultiTaskBackward, make_weighting

K = 4


def separate_backward_rows(agent, batch) -> np.ndarray:
    """[K, P]: task k's gradient of the shared parameters from its own backward pass (float64)."""
    losses = agent.task_losses(batch)
    shared = agent.shared_parameters()
    rows = []
    for k in range(agent.num_tasks):
        grads = torch.autograd.grad(losses[k], shared, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).double().numpy())
    return np.stack(rows)


def reference_statistics(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    norms = np.linalg.norm(rows, axis=1)
    cosine = rows @ rows.T / np.outer(norms, norms)
    pairs = cosine[np.triu_indices(len(rows), k=1)]
    return norms, cosine, float((pairs < 0).mean()), float(pairs.mean())


def observed_rows(engine: MultiTaskBackward, agent, batch, by_losses: bool) -> torch.Tensor:
    """The task gradients the engine hands an observer during one backward."""
    seen: list[torch.Tensor] = []
    agent.zero_grad(set_to_none=True)
    engine.backward(list(agent.task_losses(batch)) if by_losses else None, batch=batch, observe_task_grads=seen.append)
    (rows,) = seen
    return rows


@pytest.mark.parametrize(
    "method, route",
    [("uniform", "batched"), ("famo", "batched"), ("pcgrad", "batched"), ("uniform", "autograd"), ("pcgrad", "autograd")],
)
def test_norms_and_cosines_equal_those_of_k_separate_backward_passes(method, route):
    """uniform / famo: rows computed for the observer (one vmapped backward, or K autograd.grad calls
    without a batched implementation); pcgrad: the rows the method itself reads."""
    agent = small_agent(K)
    batch = agent_batch(K)
    if route == "batched":
        engine = MultiTaskBackward.for_agent(agent, make_weighting(method, K), torch.optim.SGD(agent.parameters(), lr=0.1))
    else:
        engine = MultiTaskBackward(make_weighting(method, K), agent.shared_parameters(), agent.task_specific_parameters())
    monitor = GradientConflictMonitor(K, every=1)
    monitor.record(7, observed_rows(engine, agent, batch, by_losses=route == "autograd"))
    (measured,) = monitor.take()
    norms, cosine, fraction, mean_cosine = reference_statistics(separate_backward_rows(agent, batch))
    assert measured.step == 7
    np.testing.assert_allclose(measured.grad_norm, norms, rtol=1e-5)
    np.testing.assert_allclose(measured.cosine, cosine, rtol=1e-5, atol=1e-6)
    assert 0 < fraction < 1  # the check below tells conflicting from aligned pairs
    assert measured.fraction == fraction and measured.mean_cosine == pytest.approx(mean_cosine, abs=1e-6)


def test_image_agents_get_the_step_s_own_random_shifts_and_no_draw_of_the_random_stream():
    """With augmentation the rows are those of the step's own losses (same shifts), and the
    step leaves torch's generator where it leaves it without the observer."""
    agent = small_agent(K, images=True, augment=True)
    batch = agent_batch(K, images=True)
    engine = MultiTaskBackward.for_agent(agent, make_weighting("uniform", K), torch.optim.SGD(agent.parameters(), lr=0.1))
    torch.manual_seed(5)
    rows = observed_rows(engine, agent, batch, by_losses=False)
    after_observed = torch.get_rng_state()
    torch.manual_seed(5)
    expected = separate_backward_rows(agent, batch)  # draws the shifts the step's losses drew
    torch.manual_seed(5)
    agent.zero_grad(set_to_none=True)
    engine.backward(batch=batch)
    assert torch.equal(torch.get_rng_state(), after_observed)
    np.testing.assert_allclose(rows.double().numpy(), expected, rtol=1e-4, atol=1e-6)


def test_a_zero_gradient_has_cosine_zero_a_nan_one_nan_and_one_task_no_pairs():
    rows = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]])
    norms, cosine, fraction, mean_cosine = gradient_conflict(rows)
    assert norms.tolist() == [1.0, 0.0, 2.0]
    assert cosine.tolist() == [[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]
    assert fraction.item() == pytest.approx(1 / 3) and mean_cosine.item() == pytest.approx(-1 / 3)
    _, _, fraction, mean_cosine = gradient_conflict(torch.ones(1, 3))
    assert math.isnan(fraction.item()) and math.isnan(mean_cosine.item())
    norms, cosine, fraction, mean_cosine = gradient_conflict(torch.tensor([[1.0, 0.0], [float("nan"), 0.0], [-2.0, 0.0]]))
    assert math.isnan(norms[1].item()) and cosine[1].isnan().all() and cosine[0, 2].item() == -1.0  # a skipped step
    assert math.isnan(fraction.item()) and math.isnan(mean_cosine.item())


@pytest.fixture
def folder(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")
    return tmp_path


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("method", ["uniform", "pcgrad", "famo"])
def test_every_kind_of_method_logs_the_measurements(folder, method):
    """Measured at steps 3 and 6; logged every 2 steps: step 3's measurement goes into the record of
    step 4 (with its own step) and to TensorBoard at step 3."""
    config = load_config(write_config(folder, method, method, steps=6, log_every=2), ["diagnostics.every=3"])
    run = train(config, progress=False).run_dir
    records = metrics(run)
    assert [r["step"] for r in records] == [2, 4, 6]
    assert "conflict" not in records[0]
    assert [r["conflict"]["step"] for r in records[1:]] == [3, 6]
    for record in records[1:]:
        assert list(record["grad_norm"]) == TASKS and all(v > 0 for v in record["grad_norm"].values())
        cosine = np.asarray(record["gradient_cosine"])
        assert cosine.shape == (3, 3)
        np.testing.assert_allclose(cosine, cosine.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(cosine), 1.0, atol=1e-6)
        pairs = cosine[np.triu_indices(3, k=1)]
        assert record["conflict"]["fraction"] == (pairs < 0).mean()
        assert record["conflict"]["mean_cosine"] == pytest.approx(pairs.mean(), abs=1e-12)
    logged = scalars(run)
    assert [step for step, _ in logged["conflict/fraction"]] == [3, 6]
    assert [step for step, _ in logged["conflict/mean_cosine"]] == [3, 6]
    for task in TASKS:
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in logged[f"grad_norm/{task}"]] == [
            (r["conflict"]["step"], r["grad_norm"][task]) for r in records[1:]
        ]


@pytest.mark.parametrize("overrides", [["diagnostics.every=0"], ["diagnostics.every=1", "env.tasks=[reach-v3]"]], ids=["off", "one-task"])
def test_off_or_one_task_writes_nothing(folder, overrides):
    run = train(load_config(write_config(folder, "off", "uniform", steps=2), overrides), progress=False).run_dir
    assert not any("conflict" in r or "grad_norm" in r for r in metrics(run))
    assert not [tag for tag in scalars(run) if tag.startswith(("conflict/", "grad_norm/"))]


HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__")


@pytest.mark.parametrize("method", ["uniform", "pcgrad", "famo"])
def test_training_steps_read_nothing_on_the_host(folder, method, monkeypatch):
    """A CPU stand-in for CUDA's sync check (tests/test_cuda.py has the real one): every way a tensor
    reaches the host raises during steps with and without a measurement; the log step's `take`
    then reads them all at once."""
    trainer = Trainer(load_config(write_config(folder, method, method, steps=8), ["diagnostics.every=2"]), progress=False)
    try:
        trainer.train_step()  # step 1: no measurement
        with monkeypatch.context() as patched:
            for name in HOST_READS:
                patched.setattr(torch.Tensor, name, lambda *args, _name=name, **kwargs: pytest.fail(f"host read: Tensor.{_name}"))
            for _ in range(5):  # steps 2-6: measurements at 2, 4, 6
                trainer.train_step()
        assert [m.step for m in trainer.parts.conflict.take()] == [2, 4, 6]
    finally:
        trainer.release()


def final_state(run_dir: Path) -> dict:
    return torch.load(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


def image_overrides() -> list[str]:
    return ["env.cameras=[corner]", "env.image_size=16", "agent.obs_keys=[proprio,rgb_corner]", "agent.image_channels=[8,8]"]


@pytest.mark.parametrize("method, images", [("uniform", False), ("uniform", True), ("pcgrad", False)])
def test_training_is_the_same_with_and_without_them(tmp_path, method, images):
    """The measurement draws nothing from the random streams (augmentation, PCGrad's orders) and
    writes no gradient: parameters and optimizer state are bit-identical."""
    write_tiny_dataset(tmp_path / "data.h5", image_size=16 if images else 0)
    extra = image_overrides() if images else []
    runs = {}
    for every in (0, 1):
        config = load_config(write_config(tmp_path, f"{method}-{every}", method, steps=4), [f"diagnostics.every={every}", *extra])
        runs[every] = final_state(train(config, progress=False).run_dir)
    assert runs[0]["step"] == runs[1]["step"] == 4
    for key, value in runs[0]["model"].items():
        assert torch.equal(value, runs[1]["model"][key]), key
    for index, state in runs[0]["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, runs[1]["optimizer"]["state"][index][key]), (index, key)
    assert torch.equal(runs[0]["rng"]["torch"], runs[1]["rng"]["torch"])


@pytest.mark.parametrize("method", ["uniform", "pcgrad"])
def test_resume_is_bit_identical_with_them_on(folder, method):
    overrides = ["diagnostics.every=2"]
    straight = train(load_config(write_config(folder, "straight", method, steps=8), overrides), progress=False)
    split = load_config(write_config(folder, "split", method, steps=8), overrides)
    train(split, progress=False, stop_after=3)
    resumed = train(split, resume=True, progress=False)
    a, b = final_state(straight.run_dir), final_state(resumed.run_dir)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    conflicts = [
        [(r["step"], r["grad_norm"], r["gradient_cosine"]) for r in metrics(run.run_dir) if "conflict" in r] for run in (straight, resumed)
    ]
    assert [step for step, _, _ in conflicts[0]] == [2, 4, 6, 8]
    assert conflicts[0] == conflicts[1]


@pytest.mark.parametrize("value", ["-1", "true", "1.5", ".nan", ".inf", "often"])
def test_bad_intervals_are_one_line_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"'diagnostics\.every'") as refused:
        load_config(None, [f"diagnostics.every={value}"])
    assert "\n" not in str(refused.value)


def test_the_default_interval_is_on_and_coincides_with_the_log_steps():
    config = load_config(None)
    assert config.diagnostics.every > 0 and config.diagnostics.every % config.train.log_every == 0
