"""The environments one process keeps between jobs, within its backends' simulator limits.

A pool worker runs many episodes (or demo attempts), often of several tasks, and in batched
evaluation several at once. Building an env is expensive (a MuJoCo model, or CoppeliaSim
launching), so a worker keeps the envs it made: `acquire` lends an idle env of the asked
`EnvSettings` (or makes one), `release` takes it back for the next episode. A backend whose
simulator allows only so many instances per process declares it on its suite
(`Suite.simulators_per_process`; RLBench: 1, since each PyRep instance needs its own process,
PyRep README.md:185-187). At that limit, asking for another task first tries `TaskEnv.switch_task`
on an idle env of the same backend (RLBench's `Environment.get_task` swaps the task in the
running simulator), and otherwise closes the least recently used idle one before making the new
env; with every one of them lent out, it refuses (the caller asked for more envs at once than the
backend allows). `max_envs` bounds the envs kept across all settings (least recently used idle
ones are closed first). `close()` shuts every simulator down; pool workers call it when they exit.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlmtl.envs.base import EnvSettings, Suite, TaskEnv, make_suite


@dataclass
class _Kept:
    settings: EnvSettings
    suite: Suite
    env: TaskEnv
    lent: bool = False


class ProcessEnvs:
    """Envs kept by this process, least recently used first; at most `simulators_per_process` per
    backend and (when given) `max_envs` in all."""

    def __init__(self, max_envs: int | None = None) -> None:
        self.max_envs = max_envs
        self._kept: list[_Kept] = []

    def get(self, settings: EnvSettings) -> tuple[Suite, TaskEnv]:
        """(suite, env) of `settings` for one job at a time (collection): acquired and given back at once."""
        kept = self._acquire(settings)
        kept.lent = False
        return kept.suite, kept.env

    def acquire(self, settings: EnvSettings) -> TaskEnv:
        """An env of `settings` that no other running job uses (kept, switched or new); `release` it after."""
        return self._acquire(settings).env

    def release(self, env: TaskEnv) -> None:
        """Take back an env from `acquire`: idle, most recently used."""
        for index, kept in enumerate(self._kept):
            if kept.env is env:
                kept.lent = False
                self._kept.append(self._kept.pop(index))
                return
        raise ValueError("release() of an env this process did not lend")

    def _acquire(self, settings: EnvSettings) -> _Kept:
        for index, kept in enumerate(self._kept):
            if kept.settings == settings and not kept.lent:
                return self._lend(index)
        suite = make_suite(settings.backend, settings.suite)
        limit = suite.simulators_per_process
        if limit is not None:
            same_backend = [kept for kept in self._kept if kept.settings.backend == settings.backend]
            if len(same_backend) >= limit:
                idle = [kept for kept in same_backend if not kept.lent]
                for kept in idle:
                    if kept.env.switch_task(settings):
                        kept.settings = settings
                        return self._lend(self._kept.index(kept))
                if len(same_backend) - len(idle) >= limit:
                    raise RuntimeError(
                        f"{settings.backend}: {limit} simulator(s) per process, all in use; run fewer envs at once in one process"
                    )
                for kept in idle[: len(same_backend) - limit + 1]:
                    self._close(kept)
        self._kept.append(_Kept(settings, suite, suite.make_env(settings), lent=True))
        if self.max_envs is not None:
            for kept in [kept for kept in self._kept if not kept.lent][: max(0, len(self._kept) - self.max_envs)]:
                self._close(kept)
        return self._kept[-1]

    def _lend(self, index: int) -> _Kept:
        kept = self._kept.pop(index)
        kept.lent = True
        self._kept.append(kept)
        return kept

    def _close(self, kept: _Kept) -> None:
        self._kept.remove(kept)
        kept.env.close()

    def __len__(self) -> int:
        return len(self._kept)

    def close(self) -> None:
        """Close every env (each simulator shuts down); the first error is raised after all are closed."""
        first: BaseException | None = None
        for kept in list(self._kept):
            try:
                self._close(kept)
            except Exception as error:  # noqa: BLE001  (close the rest first)
                first = first or error
        if first is not None:
            raise first
