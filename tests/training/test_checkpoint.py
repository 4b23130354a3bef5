import pickle

import pytest
import torch

from rlmtl.errors import CheckpointError
from rlmtl.training.checkpoint import (
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    resolve_last,
    save_checkpoint,
    update_last_pointer,
)


class Payload:
    """A class that a plain unpickler would instantiate (and that weights_only must refuse)."""

    def __reduce__(self):
        return (print, ("executed!",))


def test_save_pointer_prune_and_resolve(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        path = save_checkpoint(folder / f"step_{step:08d}.pt", {"meta": {}, "model": {"w": torch.tensor([step])}})
        update_last_pointer(folder, path)
        prune_checkpoints(folder, keep=2)
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000002.pt", "step_00000003.pt"]
    assert resolve_last(folder).name == "step_00000003.pt"
    assert resolve_checkpoint(tmp_path) == folder / "step_00000003.pt"
    assert load_checkpoint(resolve_checkpoint(tmp_path))["model"]["w"].item() == 3
    assert not list(folder.glob(".*tmp*"))


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "x.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(broken)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not an rlmtl checkpoint"):
        load_checkpoint(other)


def test_pickled_payload_is_refused_without_running_it(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"meta": {}, "model": {}, "extra": Payload()}, evil)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(evil)
    assert "executed!" not in capsys.readouterr().out
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="raw.pt"):
        load_checkpoint(raw)
    assert "executed!" not in capsys.readouterr().out
