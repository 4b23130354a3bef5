"""`NonFiniteMonitor`: counts skipped (NaN/inf) training steps, stops a run that keeps failing.

The weighting engine flags a step whose losses or gradients are non-finite (`found_inf`) and the
fused optimizer skips it on the device. This monitor keeps each step's flags as they are (device
tensors the step made anyway, one list append per step: no device work, no host sync) and folds
them on the host when it is read, at log and checkpoint time. After `train.max_nonfinite_steps`
skipped steps in a row the run stops, naming the tasks whose losses were non-finite and the steps.
"""

from __future__ import annotations

import torch

from rlmtl.errors import RlmtlError

MAX_PENDING = 10_000  # steps kept unread at most; a longer stretch without a read folds them (one host sync)


class NonFiniteMonitor:
    """Skipped (non-finite) steps: the current streak, the tasks whose loss was non-finite during
    it, the skipped steps since the last `take_skipped`, and the first streak that reached `limit`.

    `record` keeps the step's flags unread; every other method folds them first (a host sync: one
    transfer of all pending flags). The flags must not be written in place after `record`."""

    def __init__(self, num_tasks: int, limit: int, device: torch.device) -> None:
        self.limit = limit
        self.device = device
        self._pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (skipped [], nonfinite tasks [K], step)
        self._streak = 0
        self._streak_tasks = [False] * num_tasks
        self._skipped = 0  # since the last `take_skipped`
        self._tripped_step = 0  # the step at which a streak first reached `limit` (0: none did)
        self._tripped_tasks = [False] * num_tasks

    def record(self, bad: torch.Tensor, nonfinite_tasks: torch.Tensor, step: int) -> None:
        """`bad`: 0-dim bool, this step was skipped; `nonfinite_tasks` [K] bool; `step` = its number (1-based)."""
        self._pending.append((bad, nonfinite_tasks, step))
        if len(self._pending) >= MAX_PENDING:
            self._fold()

    def _fold(self) -> None:
        """Apply the pending flags in step order (one host transfer for all of them)."""
        if not self._pending:
            return
        skipped = torch.stack([bad.reshape(()) for bad, _, _ in self._pending])
        tasks = torch.stack([nonfinite for _, nonfinite, _ in self._pending])
        rows = torch.cat([skipped[:, None], tasks], dim=1).tolist()  # [steps, 1 + K]
        for row, (_, _, step) in zip(rows, self._pending):
            if not row[0]:
                self._streak, self._streak_tasks = 0, [False] * len(self._streak_tasks)
                continue
            self._streak += 1
            self._skipped += 1
            self._streak_tasks = [a or b for a, b in zip(self._streak_tasks, row[1:])]
            if self._streak >= self.limit and not self._tripped_step:
                self._tripped_step, self._tripped_tasks = step, list(self._streak_tasks)
        self._pending.clear()

    @property
    def streak(self) -> int:
        """Skipped steps in a row up to the last recorded one (host sync)."""
        self._fold()
        return self._streak

    @property
    def streak_tasks(self) -> torch.Tensor:
        """[K] bool (on the host): the tasks whose loss was non-finite during the current streak (host sync)."""
        self._fold()
        return torch.tensor(self._streak_tasks, dtype=torch.bool)

    def take_skipped(self) -> int:
        """Skipped steps since the last call (host sync)."""
        self._fold()
        count, self._skipped = self._skipped, 0
        return count

    def check(self, tasks: list[str]) -> None:
        """Raise RlmtlError if `limit` steps in a row were non-finite (host sync)."""
        self._fold()
        if not self._tripped_step:
            return
        step = self._tripped_step
        names = [t for t, bad in zip(tasks, self._tripped_tasks) if bad]
        cause = f"non-finite loss in task(s) {', '.join(names)}" if names else "finite losses but a non-finite gradient"
        raise RlmtlError(
            f"training stopped: steps {step - self.limit + 1}..{step} were all non-finite and skipped "
            f"(train.max_nonfinite_steps={self.limit}): {cause}; check the dataset of those tasks, lower train.lr or raise train.grad_clip"
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The current streak, as checkpoints have always held it (host sync)."""
        self._fold()
        return {
            "streak": torch.tensor(self._streak, dtype=torch.long, device=self.device),
            "streak_tasks": torch.tensor(self._streak_tasks, dtype=torch.bool, device=self.device),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._pending.clear()
        self._streak = int(state["streak"])
        self._streak_tasks = [bool(flag) for flag in state["streak_tasks"].tolist()]
