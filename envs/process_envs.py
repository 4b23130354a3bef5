"""The environments one process keeps between jobs, within its backends' simulator limits.

A pool worker runs many episodes (or demo attempts), often of several tasks. Building an env is
expensive (a MuJoCo model, or CoppeliaSim launching), so a worker keeps the envs it made, keyed by
their `EnvSettings`. A backend whose simulator allows only so many instances per process declares
it on its suite (`Suite.simulators_per_process`; RLBench: 1, since each PyRep instance needs its
own process, PyRep README.md:185-187). At that limit, asking for another task first tries
`TaskEnv.switch_task` on an env of the same backend (RLBench's `Environment.get_task` swaps the
task in the running simulator), and otherwise closes the least recently used one before making
the new env. `close()` shuts every simulator down; pool workers call it when they exit.
"""

from __future__ import annotations

from rlmtl.envs.base import EnvSettings, Suite, TaskEnv, make_suite


class ProcessEnvs:
    """Envs by settings, least recently used first; at most `simulators_per_process` per backend."""

    def __init__(self) -> None:
        self._envs: dict[EnvSettings, tuple[Suite, TaskEnv]] = {}

    def get(self, settings: EnvSettings) -> tuple[Suite, TaskEnv]:
        """(suite, env) of `settings`: a kept one, a switched one, or a new one."""
        if settings in self._envs:
            self._envs[settings] = self._envs.pop(settings)  # most recently used last
            return self._envs[settings]
        suite = make_suite(settings.backend, settings.suite)
        limit = suite.simulators_per_process
        if limit is not None:
            same_backend = [kept for kept in self._envs if kept.backend == settings.backend]
            if len(same_backend) >= limit:
                for kept in same_backend:
                    kept_suite, env = self._envs[kept]
                    if env.switch_task(settings):
                        del self._envs[kept]
                        self._envs[settings] = (kept_suite, env)
                        return self._envs[settings]
                for kept in same_backend[: len(same_backend) - limit + 1]:
                    self._close(kept)
        self._envs[settings] = (suite, suite.make_env(settings))
        return self._envs[settings]

    def _close(self, settings: EnvSettings) -> None:
        _, env = self._envs.pop(settings)
        env.close()

    def __len__(self) -> int:
        return len(self._envs)

    def close(self) -> None:
        """Close every env (each simulator shuts down); the first error is raised after all are closed."""
        first: BaseException | None = None
        for settings in list(self._envs):
            try:
                self._close(settings)
            except Exception as error:  # noqa: BLE001  (close the rest first)
                first = first or error
        if first is not None:
            raise first
