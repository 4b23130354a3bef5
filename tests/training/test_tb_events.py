"""rlmtl's own TensorBoard event files are read by TensorBoard itself, with a resumed run's events
after the resume step dropped as SummaryWriter's purge_step drops them."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlmtl.training.tb_events import EventFile


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    reader = EventAccumulator(str(folder))
    reader.Reload()
    return [(event.step, event.value) for event in reader.Scalars(tag)]


def test_tensorboard_reads_the_scalars(tmp_path):
    events = EventFile(tmp_path)
    for step in range(5):
        events.scalar("loss/mean", step / 4, step)
    events.close()
    assert scalars(tmp_path, "loss/mean") == [(step, step / 4) for step in range(5)]


def test_a_resumed_run_drops_the_events_after_its_resume_step(tmp_path):
    crashed = EventFile(tmp_path)
    for step in range(10):
        crashed.scalar("loss/mean", 1.0, step)
    crashed.close()
    resumed = EventFile(tmp_path, resumed_at=6)  # the crash lost steps 6..9 with its checkpoint at 6
    for step in range(6, 8):
        resumed.scalar("loss/mean", 2.0, step)
    resumed.close()
    assert resumed.path != crashed.path
    assert scalars(tmp_path, "loss/mean") == [(s, 1.0) for s in range(6)] + [(6, 2.0), (7, 2.0)]
