"""Learning-rate schedule: linear warm-up, cosine decay to `min_lr_ratio` x the peak, then that floor.

torch's own schedulers, chained by `SequentialLR` (w = `train.warmup_steps`, C = max(1, steps - w)):

    steps 0 .. w-1      LinearLR: lr x (step + 1) / w   (start_factor 1/w, reached 1 at step w-1; no phase when w = 0)
    steps w .. w+C      CosineAnnealingLR: from lr down to min_lr_ratio x lr
    steps after w+C     ConstantLR: min_lr_ratio x lr   (a run resumed with more `train.steps` than its schedule)

These are the values of rlmtl's earlier hand-written LambdaLR multiplier, step for step, but not to the
last bit: torch's schedulers update the rate from the previous step's rate, where the multiplier was a
closed form, so rounding accumulates (relative difference at most 1.5e-13 over a 20,000-step schedule;
tests/training/test_schedule.py). Checkpoints written with that LambdaLR hold its state (the multiplier's
settings and the step); `load_schedule_state` continues them in this scheduler at the same step and rate.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

LAMBDA_SETTINGS = ("total_steps", "warmup_steps", "min_ratio")  # what the old LambdaLR's multiplier saved


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float) -> SequentialLR:
    """The schedule above for `optimizer`, whose parameter groups share one peak rate (its current lr)."""
    peaks = {group["lr"] for group in optimizer.param_groups}
    if len(peaks) != 1:
        raise ValueError(f"the schedule needs one peak learning rate for all parameter groups, got {sorted(peaks)}")
    peak = peaks.pop()
    phases: list[LRScheduler] = []
    milestones: list[int] = []
    if warmup_steps > 0:
        phases.append(LinearLR(optimizer, start_factor=1 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1))
        milestones.append(warmup_steps)
    decay_steps = max(1, total_steps - warmup_steps)
    phases.append(CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=min_ratio * peak))
    milestones.append(warmup_steps + decay_steps)
    # the cosine alone would climb back after T_max; hold the floor instead
    phases.append(ConstantLR(optimizer, factor=min_ratio, total_iters=sys.maxsize))
    return SequentialLR(optimizer, phases, milestones)


def _lambda_settings(state: Any) -> dict[str, Any] | None:
    """The multiplier's settings when `state` is the old LambdaLR's (one parameter group), else None."""
    if not isinstance(state, dict) or not isinstance(state.get("lr_lambdas"), list) or len(state["lr_lambdas"]) != 1:
        return None
    settings = state["lr_lambdas"][0]
    if not isinstance(settings, dict) or any(key not in settings for key in LAMBDA_SETTINGS):
        return None
    if not isinstance(state.get("last_epoch"), int) or not isinstance(state.get("base_lrs"), list) or len(state["base_lrs"]) != 1:
        return None
    return settings


def saved_warmup_steps(state: Any) -> int | None:
    """The warm-up length a checkpoint's schedule state was built with, or None when it is no state of
    this schedule (neither its SequentialLR nor the older LambdaLR)."""
    settings = _lambda_settings(state)
    if settings is not None:
        return int(settings["warmup_steps"])
    if not isinstance(state, dict) or not isinstance(state.get("_schedulers"), list) or not isinstance(state.get("_milestones"), list):
        return None
    phases, milestones = state["_schedulers"], state["_milestones"]
    if len(phases) not in (2, 3) or len(milestones) != len(phases) - 1:
        return None
    return int(milestones[0]) if len(phases) == 3 else 0


def schedule_state_problem(state: Any, warmup_steps: int) -> str | None:
    """Why a checkpoint's schedule state cannot continue in `make_scheduler(..., warmup_steps, ...)`, or None.
    The saved schedule (its length, warm-up and floor) is the one that continues; only whether it has a
    warm-up phase at all must agree with the config, since that decides the scheduler's phases."""
    saved = saved_warmup_steps(state)
    if saved is None:
        return "its learning-rate schedule state is not rlmtl's (neither its SequentialLR nor the older LambdaLR)"
    if (saved > 0) != (warmup_steps > 0):
        return (
            f"its learning-rate schedule was saved with train.warmup_steps={saved} but the config has {warmup_steps}; "
            f"resume with train.warmup_steps={saved}"
        )
    return None


def _from_lambda_state(state: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The SequentialLR state at the old LambdaLR's step: this schedule, built with the saved settings on a
    stand-in optimizer, stepped as often as the old one was."""
    stand_in = torch.optim.SGD([torch.zeros(1)], lr=float(state["base_lrs"][0]))
    scheduler = make_scheduler(stand_in, int(settings["total_steps"]), int(settings["warmup_steps"]), float(settings["min_ratio"]))
    stand_in.step()  # no gradients: changes nothing, but the scheduler sees the optimizer step first
    for _ in range(state["last_epoch"]):
        scheduler.step()
    converted = scheduler.state_dict()
    if isinstance(state.get("_last_lr"), list):
        converted["_last_lr"] = list(state["_last_lr"])  # the old closed-form rate, as logged until the next step
    return converted


def load_schedule_state(scheduler: SequentialLR, state: dict[str, Any]) -> None:
    """Load a checkpoint's schedule state, converting the older LambdaLR state; ValueError when it cannot
    continue in `scheduler` (`schedule_state_problem` says why, for the checkpoint's error message)."""
    settings = _lambda_settings(state)
    if settings is not None:
        state = _from_lambda_state(state, settings)
    if not isinstance(state.get("_schedulers"), list) or len(state["_schedulers"]) != len(scheduler._schedulers):
        raise ValueError("the checkpoint's learning-rate schedule has other phases than the config's")
    scheduler.load_state_dict(state)
