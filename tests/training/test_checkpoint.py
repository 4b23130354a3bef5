import pickle

import pytest
import torch

from rlmtl.errors import CheckpointError
from rlmtl.training.checkpoint import (
    commit_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    resolve_last,
    save_checkpoint,
)


class Payload:
    """A class that a plain unpickler would instantiate (and that weights_only must refuse)."""

    def __reduce__(self):
        return (print, ("executed!",))


def test_save_pointer_prune_and_resolve(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        path = save_checkpoint(folder / f"step_{step:08d}.pt", {"meta": {}, "model": {"w": torch.tensor([step])}})
        commit_checkpoint(folder, path, keep=2)
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000002.pt", "step_00000003.pt"]
    assert resolve_last(folder).name == "step_00000003.pt"
    assert resolve_checkpoint(tmp_path) == folder / "step_00000003.pt"
    assert load_checkpoint(resolve_checkpoint(tmp_path))["model"]["w"].item() == 3
    assert not list(folder.glob(".*tmp*"))


def test_pruning_deletes_only_checkpoints_this_run_wrote(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    foreign = folder / "step_00000000.pt"  # copied in from another run: the oldest name
    torch.save({"meta": {}, "model": {}}, foreign)
    written = []
    for step in (1, 2, 3, 4):
        path = save_checkpoint(folder / f"step_{step:08d}.pt", {"meta": {}, "model": {"w": torch.tensor([step])}})
        written.append(path)
        if step == 2:
            torch.save({"meta": {}, "model": {"w": torch.tensor([-1, -1])}}, written[0])  # a listed file replaced since
        commit_checkpoint(folder, path, keep=1)
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_00000000.pt", "step_00000001.pt", "step_00000004.pt"]
    assert load_checkpoint(written[0])["model"]["w"].tolist() == [-1, -1]


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
