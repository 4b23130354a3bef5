"""`NonFiniteMonitor`: counts skipped (NaN/inf) training steps on the device, stops a run that keeps failing.

The weighting engine flags a step whose losses or gradients are non-finite (`found_inf`) and the
fused optimizer skips it; this monitor records each step's flag with a few tiny device ops and is
read by the host only at log and checkpoint time. After `train.max_nonfinite_steps` skipped steps
in a row the run stops, naming the tasks whose losses were non-finite and the steps.
"""

from __future__ import annotations

import torch

from rlmtl.errors import RlmtlError


class NonFiniteMonitor:
    """Device-side counters of skipped (non-finite) steps; `check` reads them (a host sync).

    `record` costs a few tiny device ops per step: the current streak of skipped steps, the tasks
    whose loss was non-finite during it, and the first streak that reached `limit`."""

    def __init__(self, num_tasks: int, limit: int, device: torch.device) -> None:
        self.limit = limit
        self.streak = torch.zeros((), dtype=torch.long, device=device)
        self.streak_tasks = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)  # since the last `take_skipped`
        self.tripped = torch.zeros((), dtype=torch.bool, device=device)
        self.tripped_step = torch.zeros((), dtype=torch.long, device=device)
        self.tripped_tasks = torch.zeros(num_tasks, dtype=torch.bool, device=device)

    def record(self, bad: torch.Tensor, nonfinite_tasks: torch.Tensor, step: int) -> None:
        """`bad`: 0-dim bool, this step was skipped; `nonfinite_tasks` [K] bool; `step` = its number (1-based)."""
        self.streak.mul_(bad).add_(bad)  # one more when skipped, else 0
        self.streak_tasks.logical_or_(nonfinite_tasks).logical_and_(bad)
        self.skipped += bad
        newly = (self.streak >= self.limit) & ~self.tripped
        self.tripped_step.masked_fill_(newly, step)
        self.tripped_tasks.logical_or_(newly & self.streak_tasks)
        self.tripped |= newly

    def take_skipped(self) -> int:
        """Skipped steps since the last call (host sync)."""
        count = int(self.skipped)
        self.skipped.zero_()
        return count

    def check(self, tasks: list[str]) -> None:
        """Raise RlmtlError if `limit` steps in a row were non-finite (host sync)."""
        if not bool(self.tripped):
            return
        step = int(self.tripped_step)
        names = [t for t, bad in zip(tasks, self.tripped_tasks.tolist()) if bad]
        cause = f"non-finite loss in task(s) {', '.join(names)}" if names else "finite losses but a non-finite gradient"
        raise RlmtlError(
            f"training stopped: steps {step - self.limit + 1}..{step} were all non-finite and skipped "
            f"(train.max_nonfinite_steps={self.limit}): {cause}; check the dataset of those tasks, lower train.lr or raise train.grad_clip"
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"streak": self.streak, "streak_tasks": self.streak_tasks}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.streak.copy_(state["streak"])
        self.streak_tasks.copy_(state["streak_tasks"])
