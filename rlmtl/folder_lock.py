"""One rlmtl process per output folder: an advisory lock on `<folder>/.rlmtl.lock`.

Training holds its run folder's lock for the whole run, evaluation its output folder's, collection
its dataset file's (`<data folder>/.<name>.lock`), so two commands never write one folder at once:
the second is refused (OutputError, exit 4) with the holder's pid, host and command. The lock is
`fcntl.flock` on an open file, so the kernel releases it when its process dies, however it dies;
the holder's details stay in the file only while it holds it, and a lock file still naming a
holder when it is taken belonged to a process that died: that is said on stderr.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from rlmtl.errors import OutputError

LOCK_NAME = ".rlmtl.lock"


class FolderLock:
    """Exclusive lock of `folder` (the file `lock_name` in it) for `purpose` (e.g. "rlmtl train").

    Use as a context manager, or `acquire()` / `release()`; acquiring a lock another process holds
    raises OutputError naming it."""

    def __init__(self, folder: Path, purpose: str, lock_name: str = LOCK_NAME) -> None:
        self.path = Path(folder) / lock_name
        self.purpose = purpose
        self._handle: IO[str] | None = None

    def acquire(self) -> "FolderLock":
        try:
            handle = open(self.path, "a+", encoding="utf-8")
        except OSError as error:
            raise OutputError(f"{self.path}: cannot create the folder's lock file ({error.strerror or error})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise OutputError(f"{self.path.parent}: in use by {holder}; wait for it to finish or use another folder") from None
        previous = _read_holder(handle)
        if previous != "another rlmtl process":
            print(f"rlmtl: took over the lock of {self.path.parent} from {previous}, which ended without releasing it", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.purpose, "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        self._handle = handle
        return self

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        """Clear the holder's details and unlock (safe to call twice)."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.release()


def lock_holder(folder: Path, lock_name: str = LOCK_NAME) -> str | None:
    """Who holds the lock of `folder` ('pid 123 on host (...)'), or None when nobody does; writes nothing."""
    path = Path(folder) / lock_name
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OutputError(f"{path}: cannot read the lock file ({error.strerror or error})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def _read_holder(handle: IO[str]) -> str:
    """'pid 123 on host (rlmtl train, since ...)' from the lock file, or 'another rlmtl process'."""
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "null")
        return f"pid {holder['pid']} on {holder['host']} ({holder['command']}, since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "another rlmtl process"
