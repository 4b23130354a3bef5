"""The journal of a collection in progress: every finished expert attempt, so that a collection
killed half-way resumes from the demos it had finished.

It lives beside the dataset file, in `.<dataset name>.partial/` (locked with the dataset), one
file per attempt written atomically: `t<task index>-a<attempt>.npz` for a successful demo (its
arrays, read back with `allow_pickle=False`), `t<task index>-a<attempt>.failed` for an attempt
that failed. A `fingerprint` file names the collection settings it belongs to; a journal of other
settings is discarded. The journal is removed once the dataset is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rlmtl.atomic import atomic_path, write_text_atomic
from rlmtl.data.dataset import Episode

Attempt = tuple[str, int]  # (task, attempt index)


class AttemptJournal:
    """Finished attempts of the collection writing `dataset` with settings `fingerprint`."""

    def __init__(self, dataset: Path, fingerprint: str, task_index: dict[str, int]) -> None:
        self.folder = dataset.parent / f".{dataset.name}.partial"
        self.fingerprint = fingerprint
        self.task_index = task_index
        self._tasks = {index: task for task, index in task_index.items()}
        self._stamped = False  # the fingerprint file exists (found by `load`, or written by the first `record`)

    def load(self) -> dict[Attempt, Episode | None]:
        """The attempts already finished (None for a failed one); {} for no journal or one of other settings."""
        stamp = self.folder / "fingerprint"
        if not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != self.fingerprint:
            self.remove()
            return {}
        self._stamped = True
        done: dict[Attempt, Episode | None] = {}
        for path in self.folder.iterdir():
            key = self._key(path.stem)
            if key is None:
                continue
            if path.suffix == ".failed":
                done[key] = None
            elif path.suffix == ".npz":
                episode = _read_episode(path)
                if episode is not None:
                    done[key] = episode
        return done

    def record(self, task: str, attempt: int, episode: Episode | None) -> None:
        """Add one finished attempt (atomically: a kill never leaves half an entry)."""
        if not self._stamped:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.folder / "fingerprint", self.fingerprint + "\n")
            self._stamped = True
        name = f"t{self.task_index[task]:03d}-a{attempt:06d}"
        if episode is None:
            write_text_atomic(self.folder / f"{name}.failed", "")
            return
        arrays = {f"obs__{key}": value for key, value in episode.observations.items()}
        arrays.update(actions=episode.actions, rewards=episode.rewards, success=episode.success)
        arrays.update(scene_seed=np.int64(episode.scene_seed), attempt=np.int64(episode.attempt))
        with atomic_path(self.folder / f"{name}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self._stamped = False

    def _key(self, stem: str) -> Attempt | None:
        try:
            task_part, attempt_part = stem.split("-")
            return self._tasks[int(task_part[1:])], int(attempt_part[1:])
        except (ValueError, KeyError):
            return None


def _read_episode(path: Path) -> Episode | None:
    """An episode written by `record`, or None when the file cannot be read (that attempt reruns)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            observations = {name[len("obs__") :]: arrays[name] for name in arrays.files if name.startswith("obs__")}
            return Episode(
                observations=observations,
                actions=arrays["actions"],
                rewards=arrays["rewards"],
                success=arrays["success"],
                scene_seed=int(arrays["scene_seed"]),
                attempt=int(arrays["attempt"]),
            )
    except (OSError, ValueError, KeyError):
        return None
