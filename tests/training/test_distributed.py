"""Data-parallel training on 2 gloo processes equals one process with the same global batch."""

from __future__ import annotations

import faulthandler
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from process_helpers import run_torchrun
from synthetic_runs import METHODS, STEPS, write_config, write_tiny_dataset

from rlmtl.config import load_config
from rlmtl.distributed import Ranks, leave_process, shutdown
from rlmtl.training.trainer import Trainer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_main(rank: int, world_size: int, port: int, jobs: list[tuple[str, int | None]], out: str) -> None:
    """One torchrun-like rank: train each (config, stop_after) job, dump its weighting state."""
    faulthandler.enable()  # a native abort prints this rank's Python stacks
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        for config_path, stop_after in jobs:
            trainer = Trainer(load_config(config_path), progress=False, stop_after=stop_after)
            trainer.run()
            state = {key: value.clone() for key, value in trainer.parts.weighting.state_dict().items()}
            torch.save(state, Path(out) / f"{Path(config_path).stem}_rank{rank}.pt")
    finally:
        shutdown()
    leave_process(0)  # as `rlmtl` ends a rank: no interpreter teardown while gloo's threads may call in


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


def weights_per_step(run_dir: Path) -> list[list[float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [list(r["weight"].values()) for r in records if "weight" in r]


def single_process(config_path: Path, resume: bool = False) -> Trainer:
    trainer = Trainer(load_config(config_path), resume=resume, progress=False)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    """One spawn of 2 gloo ranks trains every method (and the first half of a resumed run)."""
    folder = tmp_path_factory.mktemp("ddp")
    write_tiny_dataset(folder / "data.h5")
    jobs = [(str(write_config(folder, f"{method}_ddp", method)), None) for method in METHODS]
    jobs.append((str(write_config(folder, "resume_ddp", "famo", steps=2 * STEPS)), STEPS))
    jobs += [(str(write_config(folder, f"conflict_{method}_ddp", method, diagnostics_every=1)), None) for method in CONFLICT_METHODS]
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(rank_main, args=(2, free_port(), jobs, str(folder)), nprocs=2, join=True)
    return folder


@pytest.mark.parametrize("method", list(METHODS))
def test_two_ranks_match_one_process(two_rank_runs, method):
    folder = two_rank_runs
    reference = single_process(write_config(folder, f"{method}_single", method))
    ddp, one = last_checkpoint(folder / "runs" / f"{method}_ddp"), last_checkpoint(reference.run_dir)
    assert ddp["step"] == one["step"] == STEPS
    moved = False
    for key, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-3, atol=5e-5, msg=lambda m: f"{method} {key}: {m}")
        moved = moved or not torch.equal(value, last_checkpoint_initial(folder, reference)["model"][key])
    assert moved
    np.testing.assert_allclose(
        weights_per_step(folder / "runs" / f"{method}_ddp"), weights_per_step(reference.run_dir), rtol=1e-3, atol=2e-5
    )
    for key, value in one["weighting"].items():
        torch.testing.assert_close(ddp["weighting"][key], value, rtol=1e-3, atol=2e-5)
    # state of methods with their own optimizer (FAMO's logits, Auto-Lambda's lambda) is identical on both ranks
    rank0, rank1 = (torch.load(folder / f"{method}_ddp_rank{r}.pt", weights_only=True) for r in (0, 1))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), (method, key)
    if method in ("famo", "auto_lambda", "auto_lambda_real"):
        first = weights_per_step(reference.run_dir)
        assert first[0] != first[-1]  # the weights really moved, so the comparison means something


def last_checkpoint_initial(folder: Path, trainer: Trainer) -> dict:
    """The step-1 checkpoint is pruned; rebuild the initial parameters from the same seed instead."""
    torch.manual_seed(trainer.config.train.seed)
    from rlmtl.build import build_agent

    return {"model": build_agent(trainer.meta).state_dict()}


CONFLICT_METHODS = ["uniform", "pcgrad"]  # the engine computes the rows for the observer / the method reads them


@pytest.mark.parametrize("method", CONFLICT_METHODS)
def test_gradient_conflict_of_two_ranks_is_that_of_the_global_batch(two_rank_runs, method):
    """Each rank's task gradients are averaged (in the engine's all-reduce) before the measurement,
    so 2 ranks log what one process with the same global batch logs."""
    folder = two_rank_runs
    reference = single_process(write_config(folder, f"conflict_{method}_single", method, diagnostics_every=1))
    logged = []
    for run_dir in (folder / "runs" / f"conflict_{method}_ddp", reference.run_dir):
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        logged.append([(r["conflict"]["step"], list(r["grad_norm"].values()), r["gradient_cosine"]) for r in records])
    assert [step for step, _, _ in logged[0]] == [step for step, _, _ in logged[1]] == list(range(1, STEPS + 1))
    for (_, norms, cosine), (_, want_norms, want_cosine) in zip(*logged):
        np.testing.assert_allclose(norms, want_norms, rtol=1e-4)
        np.testing.assert_allclose(cosine, want_cosine, rtol=1e-3, atol=1e-4)


def test_resume_on_fewer_ranks_continues_the_sampler(two_rank_runs):
    folder = two_rank_runs
    half = last_checkpoint(folder / "runs" / "resume_ddp")
    assert half["step"] == STEPS
    resumed = single_process(folder / "resume_ddp.yaml", resume=True)
    straight = single_process(write_config(folder, "resume_single", "famo", steps=2 * STEPS))
    assert resumed.step == straight.step == 2 * STEPS
    assert resumed.parts.sampler.state_dict()["generator"].equal(straight.parts.sampler.state_dict()["generator"])
    a, b = last_checkpoint(resumed.run_dir), last_checkpoint(straight.run_dir)
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=1e-3, atol=5e-5)
    # FAMO's logits follow differences of log-losses before/after a step: rounding-sensitive
    torch.testing.assert_close(a["weighting"]["logits"], b["weighting"]["logits"], rtol=1e-3, atol=2e-5)


def test_one_process_has_no_process_group(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks, device = Ranks.from_environment(torch.device("cpu"))
    assert ranks == Ranks() and not ranks.distributed and device == torch.device("cpu")
    x = torch.arange(3.0)
    assert ranks.mean(x) is x and not torch.distributed.is_initialized()


class _TwoRanks:
    """A stand-in reducer that claims 2 ranks (set_reducer only inspects the method)."""

    distributed = True

    def mean(self, tensor):
        return tensor

    def mean_in_place(self, tensors):
        pass


def test_methods_that_cannot_average_their_statistics_refuse_to_start():
    from rlmtl.weighting import MultiTaskBackward, make_weighting
    from rlmtl.weighting.base import Requirements, Weighting

    class LocalLookahead(Weighting):
        requirements = Requirements(functional_losses=True)

    model = torch.nn.Linear(3, 2)
    named = dict(model.named_parameters())
    common = dict(
        named_parameters=named, losses_at=lambda params, batch: torch.zeros(2), optimizer=torch.optim.SGD(model.parameters(), lr=0.1)
    )
    with pytest.raises(ValueError, match="LocalLookahead.*cannot run on several ranks"):
        MultiTaskBackward(LocalLookahead(2), model.parameters(), reducer=_TwoRanks(), **common)
    MultiTaskBackward(LocalLookahead(2), model.parameters(), **common)  # one process: fine
    for name in ("auto_lambda", "auto_lambda+cagrad", "famo", "pcgrad", "nash_mtl"):
        MultiTaskBackward(make_weighting(name, 2), model.parameters(), reducer=_TwoRanks(), **common)


def test_torchrun_cli_trains_with_two_ranks(tmp_path):
    """The real entry point: `torchrun --standalone --nproc-per-node=2 -m rlmtl train CONFIG`."""
    write_tiny_dataset(tmp_path / "data.h5")
    config = write_config(tmp_path, "cli", "famo", steps=4, log_every=2, checkpoint_every=2)
    done = run_torchrun(2, "train", str(config), "--no-progress", timeout=120, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "cli"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # rank 0 alone logs
    assert (run / "checkpoints" / "last").read_text().strip() == "step_00000004.pt"
    assert done.stdout.count("step_00000004.pt") == 2  # every rank returns the checkpoint path


def test_slurm_sweep_maps_array_index_to_method_and_seed(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[2]
    config = write_config(tmp_path, "sweep", "uniform")
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "METHODS": "uniform famo pcgrad",
        "SEEDS": "0 1",
        "NODES": "2",
        "GPUS": "8",
        "SLURM_ARRAY_TASK_ID": "3",
        "PYTHON": sys.executable,  # the environment rlmtl is installed in
    }
    done = subprocess.run(
        ["bash", str(root / "scripts" / "slurm_sweep.sh"), "task", str(config), "train.steps=5"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "--nnodes=2 --nproc-per-node=8" in done.stderr and "-m rlmtl train" in done.stderr
    assert "weighting.name=famo train.seed=1 name=mt10-famo-seed1" in done.stderr  # index 3 = (famo, seed 1)
    submit = subprocess.run(
        ["bash", str(root / "scripts" / "slurm_sweep.sh"), "submit", str(config)], env=env, capture_output=True, text=True
    )
    assert submit.returncode == 0 and "--array=0-5" in submit.stderr and "rlmtl collect" in submit.stderr
    env["SLURM_ARRAY_TASK_ID"] = "6"
    out_of_range = subprocess.run(
        ["bash", str(root / "scripts" / "slurm_sweep.sh"), "task", str(config)], env=env, capture_output=True, text=True
    )
    assert out_of_range.returncode == 2 and "6 >= 6" in out_of_range.stderr
