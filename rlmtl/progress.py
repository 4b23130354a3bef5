"""Progress that suits where stderr goes: a tqdm bar on a terminal, plain lines in a log file.

A bar redraws itself with carriage returns, which a log file (a SLURM log, CI output, `2> log`)
keeps as one long line of hundreds of segments. When stderr is not a terminal, `progress_bar`
returns a `ProgressLines` instead: the same calls (`update`, `set_postfix`, `write`, `close`),
printing one line (count, percentage, rate, time left, the postfix) at most every
`LINE_INTERVAL_S` seconds, and a last one at `close`. `enabled=False` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 10.0


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> Any:
    """A tqdm bar (stderr is a terminal), `ProgressLines` (it is not), or a silent bar (disabled)."""
    if enabled and not sys.stderr.isatty():
        return ProgressLines(total, desc, unit, initial)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not enabled, file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressLines:
    """tqdm's progress calls, printed as plain lines: `desc: n/total unit (p%), r unit/s, ETA t, key=value`."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, interval_s: float = LINE_INTERVAL_S) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = initial
        self.interval_s = interval_s
        self._start = time.monotonic()
        self._last_line = self._start
        self._postfix = ""
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._print(now)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def write(self, message: str, file: TextIO | None = None) -> None:
        print(message, file=file or sys.stderr, flush=True)

    def _print(self, now: float) -> None:
        self._last_line = now
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}s" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.n < self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        else:
            parts.append(f"took {_duration(elapsed)}")
        if self._postfix:
            parts.append(self._postfix)
        print(", ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print(time.monotonic())
