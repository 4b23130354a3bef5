"""A trainer's checkpoint content: what `save` writes and `restore` reads back, for exact resume.

The payload (`CheckpointPayload`, rlmtl/training/checkpoint.py) holds the agent, optimizer,
schedule, weighting state, the weights' moving average (train.ema_decay), both samplers' generators, the RNG states, the non-finite streak, the
best evaluation success and the TAG probe's running sums, so a resumed run continues bit-identically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlmtl.distributed import Ranks
from rlmtl.errors import CheckpointError
from rlmtl.tag.probe import AffinityProbe
from rlmtl.training.checkpoint import CheckpointMeta, CheckpointPayload, RngState
from rlmtl.training.schedule import load_schedule_state, schedule_state_problem
from rlmtl.training.step import TrainingParts


def rng_state(device: torch.device, ranks: Ranks) -> RngState:
    """The CPU generator's state and, on CUDA, this rank's device (under torchrun) or every device's."""
    cuda: list[torch.Tensor] = []
    if device.type == "cuda":
        cuda = [torch.cuda.get_rng_state(device)] if ranks.distributed else torch.cuda.get_rng_state_all()
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: RngState, device: torch.device, ranks: Ranks) -> None:
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = [s.cpu() for s in state["cuda"]]
    if device.type == "cuda" and cuda_states:
        if ranks.distributed or len(cuda_states) != torch.cuda.device_count():
            torch.cuda.set_rng_state(cuda_states[0], device)
        else:
            torch.cuda.set_rng_state_all(cuda_states)


def training_payload(
    parts: TrainingParts, meta: CheckpointMeta, best_success: float | None, probe: AffinityProbe | None, rng: RngState
) -> CheckpointPayload:
    """Everything a resumed run needs (see the module docstring)."""
    return {
        "meta": meta,
        "step": parts.balance.steps,
        "model": parts.agent.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "weighting": parts.weighting.state_dict(),
        "sampler": parts.sampler.state_dict(),
        "val_sampler": parts.val_sampler.state_dict() if parts.val_sampler else None,
        "rng": rng,
        "nonfinite": parts.nonfinite.state_dict(),
        "best_success": best_success,
        "affinity_probe": probe.state_dict() if probe is not None else None,
        "ema": parts.ema.state_dict() if parts.ema is not None else None,
    }


def check_resumable(payload: CheckpointPayload, meta: CheckpointMeta, path: Path) -> None:
    """The checkpoint must come from the same tasks, shapes, dataset, agent and weighting config, and hold a
    learning-rate schedule state the config's schedule can continue."""
    saved = payload["meta"]
    for key in ("tasks", "obs_shapes", "action_dim"):
        if saved.get(key) != meta.get(key):
            raise CheckpointError(f"{path}: checkpoint {key} {saved.get(key)!r} does not match the config's {meta.get(key)!r}")
    data, saved_data = meta.get("dataset", {}), dict(saved.get("dataset", {}))
    saved_data.setdefault("sha256", data.get("sha256", ""))  # checkpoints written before the hash was recorded
    for key in ("path", "fingerprint", "sha256"):
        if saved_data.get(key) != data.get(key):
            what = "content changed since the run started (same path and settings, other bytes)" if key == "sha256" else f"{key} differs"
            raise CheckpointError(
                f"{path}: the run trained on dataset {saved_data.get('path')!r} and its {what}: {saved_data.get(key)!r} vs {data.get(key)!r}"
            )
    for section in ("agent", "weighting"):
        if saved["config"][section] != meta["config"][section]:
            raise CheckpointError(f"{path}: checkpoint was trained with another {section} config")
    saved_ema = float(saved["config"]["train"].get("ema_decay", 0.0))
    if saved_ema != float(meta["config"]["train"].get("ema_decay", 0.0)):
        raise CheckpointError(f"{path}: checkpoint was trained with train.ema_decay={saved_ema:g}; resume with the same value")
    problem = schedule_state_problem(payload.get("scheduler"), int(meta["config"]["train"]["warmup_steps"]))
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")


def restore_training(parts: TrainingParts, payload: CheckpointPayload, probe: AffinityProbe | None) -> None:
    """Load a checked payload into the parts (the engine's step count included) and the probe."""
    parts.agent.load_state_dict(payload["model"])
    parts.optimizer.load_state_dict(payload["optimizer"])
    load_schedule_state(parts.scheduler, payload["scheduler"])  # also the LambdaLR state of older checkpoints
    parts.weighting.load_state_dict(payload["weighting"])
    parts.sampler.load_state_dict(payload["sampler"])
    if parts.val_sampler is not None and payload.get("val_sampler"):
        parts.val_sampler.load_state_dict(payload["val_sampler"])
    if payload.get("nonfinite"):
        parts.nonfinite.load_state_dict(payload["nonfinite"])
    parts.balance.steps = int(payload["step"])
    if parts.ema is not None:
        parts.ema.load_state_dict(payload["ema"])
    if probe is not None and payload.get("affinity_probe"):
        probe.load_state_dict(payload["affinity_probe"])
