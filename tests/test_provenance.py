"""Provenance: the rlmtl version and git commit, torch, Python and simulator versions in a run's
config.yaml, its checkpoints, eval.json and report.md; `rlmtl --version`."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_config_dict
from synthetic_runs import write_tiny_dataset

from rlmtl import __version__
from rlmtl.cli import main
from rlmtl.config import load_config
from rlmtl.provenance import provenance, provenance_line
from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"rlmtl {__version__}"


def test_a_run_records_what_produced_it(tmp_path, capsys):
    write_tiny_dataset(tmp_path / "d.h5")
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(tiny_config_dict(tmp_path, data={"path": str(tmp_path / "d.h5")}, train={"steps": 4, "checkpoint_every": 2}))
    )
    assert main(["train", str(config), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    record = provenance()
    assert (
        record["rlmtl"] == __version__
        and record["torch"] == str(torch.__version__)
        and type(record["torch"]) is str
        and "mujoco" in record["packages"]
    )
    first_line = (run / "config.yaml").read_text().splitlines()[0]
    assert first_line == f"# written by {provenance_line()}"
    load_config(run / "config.yaml")  # the comment keeps it a loadable config
    assert load_checkpoint(resolve_checkpoint(run))["meta"]["provenance"] == record
    out = tmp_path / "out"
    out.mkdir()
    assert main(["eval", str(run), "--episodes", "1", "--workers", "1", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["provenance"] == record and result["trained_with"] == record
    assert main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert f"Trained with {provenance_line(record)}." in report and f"Evaluated with {provenance_line(record)}." in report
    capsys.readouterr()
