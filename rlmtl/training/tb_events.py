"""TensorBoard event files written synchronously, so a failed write is an error rlmtl can report.

`torch.utils.tensorboard.SummaryWriter` writes from a background thread: on a full disk or an
unwritable `tb/` its error is a traceback from that thread, raised again at some later call. rlmtl
logs only at log intervals, so it writes each event itself, in the caller's thread, in
TensorBoard's record format (tensorboard `summary/writer/record_writer.py`: length, masked CRC,
data, masked CRC) to a file named `events.out.tfevents.<time>.<host>.<pid>.<n>` (TensorBoard reads
the files whose name holds `tfevents`, in name order). On resume the first event is a `SessionLog.START` at the resumed step, which tells
TensorBoard to drop the events a crashed run logged after it (the `purge_step` of SummaryWriter).
Every `OSError` becomes an `OutputError` naming the file.
"""

from __future__ import annotations

import os
import socket
import time
from itertools import count
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

from rlmtl.errors import OutputError

_opened = count()  # tells apart the files one process opens within one second


class EventFile:
    """One TensorBoard event file in `folder`; `resumed_at`: the step a resumed run restarts from (0: a new run)."""

    def __init__(self, folder: Path, resumed_at: int = 0) -> None:
        self.path = Path(folder) / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_opened)}"
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self._records = RecordWriter(open(self.path, "ab"))
        except OSError as error:
            raise self._error("cannot create", error) from None
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if resumed_at:
            self._write(Event(wall_time=time.time(), step=resumed_at, session_log=SessionLog(status=SessionLog.START)))

    def _error(self, doing: str, error: OSError) -> OutputError:
        return OutputError(f"{self.path}: {doing} the TensorBoard event file ({error.strerror or error})")

    def _write(self, event: Event) -> None:
        try:
            self._records.write(event.SerializeToString())
            self._records.flush()
        except OSError as error:
            raise self._error("cannot write", error) from None

    def summary(self, summary: Summary, step: int) -> None:
        """Append one summary at `step`."""
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Append one scalar."""
        self.summary(Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]), step)

    def close(self) -> None:
        try:
            self._records.close()
        except OSError:  # every event was flushed when written, and a failed flush was reported then
            pass
