"""Progress suits where stderr goes: a bar on a terminal; plain lines, with no carriage returns,
in a log file; nothing with --no-progress."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from conftest import tiny_config_dict
from synthetic_runs import write_tiny_dataset
from tqdm import tqdm

from rlmtl.progress import ProgressLines, progress_bar


def test_plain_lines_carry_count_rate_eta_and_postfix(capsys):
    lines = ProgressLines(200, "train", "step", interval_s=0.0)
    lines.update(50)
    lines.set_postfix(loss="0.1234")
    lines.update(50)
    lines.close()
    lines.close()  # once
    out = capsys.readouterr().err.splitlines()
    assert len(out) == 3 and "\r" not in "".join(out)
    assert out[0].startswith("train: 50/200 steps (25%), ") and "step/s" in out[0] and "ETA " in out[0]
    assert out[1].startswith("train: 100/200 steps (50%)") and out[1].endswith("loss=0.1234")


def test_the_kind_follows_stderr(monkeypatch, capsys):
    assert isinstance(progress_bar(10, "eval", "episode"), ProgressLines)  # pytest's captured stderr is no terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress_bar(10, "eval", "episode")
    assert isinstance(bar, tqdm)
    bar.close()
    capsys.readouterr()
    silent = progress_bar(10, "eval", "episode", enabled=False)
    silent.update(5)
    silent.close()
    assert capsys.readouterr().err == ""


def test_a_training_log_file_gets_lines_not_carriage_returns(tmp_path):
    write_tiny_dataset(tmp_path / "d.h5")
    config = tmp_path / "c.yaml"
    sections = {"data": {"path": str(tmp_path / "d.h5")}, "train": {"steps": 40, "log_every": 10, "checkpoint_every": 40}}
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, **sections)))
    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "rlmtl", "train", str(config)], stderr=handle, env=dict(os.environ, PYTHONWARNINGS="ignore")
        )
    text = log.read_text()
    assert done.returncode == 0, text[-2000:]
    assert "\r" not in text and "train: 40/40 steps (100%)" in text and "loss=" in text
