"""CUDA-only checks (marked `cuda`; skipped without a CUDA device, with the reason): training steps
of several methods with no host synchronisation, also at gradient-conflict measurement steps, and
the streamed sampler's pinned-memory path.
`bash scripts/gpu_check.sh` runs these on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from synthetic_runs import TASKS, write_tiny_dataset

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (run scripts/gpu_check.sh on a GPU machine)"),
]


@pytest.mark.parametrize("method", ["uniform", "famo", "pcgrad", "auto_lambda"])
def test_training_steps_do_not_sync_with_the_host(tmp_path, method):
    from rlmtl.config import load_config
    from rlmtl.training.trainer import Trainer

    dataset = write_tiny_dataset(tmp_path / "d.h5")
    overrides = [f"data.path={dataset}", f"env.tasks=[{','.join(TASKS)}]", "train.device=cuda", f"weighting.name={method}"]
    overrides += [f"out_dir={tmp_path}", "name=cuda", "train.batch_per_task=8"]
    if method == "auto_lambda":
        overrides.append(f"weighting.primary_tasks=[{TASKS[0]}]")
    trainer = Trainer(load_config(None, overrides), progress=False)
    try:
        for _ in range(3):
            trainer.train_step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                losses, _ = trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(losses).all()
    finally:
        trainer.release()


@pytest.mark.parametrize("method", ["uniform", "pcgrad"])
def test_gradient_conflict_measurements_do_not_sync_with_the_host(tmp_path, method):
    """Measured every 2 steps (uniform: rows computed for it under a forked CUDA generator; pcgrad:
    the method's own rows); the host reads them only in `take`, at the log step."""
    from rlmtl.config import load_config
    from rlmtl.training.trainer import Trainer

    dataset = write_tiny_dataset(tmp_path / "d.h5")
    overrides = [f"data.path={dataset}", f"env.tasks=[{','.join(TASKS)}]", "train.device=cuda", f"weighting.name={method}"]
    overrides += [f"out_dir={tmp_path}", "name=cuda", "train.batch_per_task=8", "diagnostics.every=2"]
    trainer = Trainer(load_config(None, overrides), progress=False)
    try:
        trainer.train_step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(4):  # steps 2-5: measurements at 2 and 4
                trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        measured = trainer.parts.conflict.take()
        assert [m.step for m in measured] == [2, 4] and all(0 <= m.fraction <= 1 for m in measured)
    finally:
        trainer.release()


def test_streamed_batches_on_cuda_equal_in_memory_batches(tmp_path):
    from rlmtl.data.dataset import load_dataset
    from rlmtl.data.sampler import FlatData, TaskBalancedSampler
    from rlmtl.data.streaming import StreamingSampler

    path = write_tiny_dataset(tmp_path / "images.h5", image_size=40)
    cuda = torch.device("cuda")
    keys = ["state", "rgb_corner"]
    plain = TaskBalancedSampler(FlatData.build(load_dataset(path, TASKS, keys), keys, cuda), 6, 0, cuda)
    streamed_data = load_dataset(path, TASKS, keys, stream_keys=["rgb_corner"])
    stream = StreamingSampler(streamed_data, FlatData.build(streamed_data, ["state"], cuda), ["rgb_corner"], 6, 0, cuda)
    try:
        for _ in range(3):
            a, b = plain.sample(), stream.sample()
            assert b["obs"]["rgb_corner"].device.type == "cuda"
            for key in keys:
                assert torch.equal(a["obs"][key], b["obs"][key])
    finally:
        stream.close()
