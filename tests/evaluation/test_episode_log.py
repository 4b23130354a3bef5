"""The episodes log reader takes only records rlmtl could have written, a line at a time: a huge,
sparse, deeply nested or mistyped log is skipped line by line or refused, never loaded whole."""

from __future__ import annotations

import json
import os

import pytest

from rlmtl.errors import OutputError
from rlmtl.evaluation.episode_log import MAX_LINE_BYTES, EpisodeLog, read_log, read_logs

RECORD = {
    "checkpoint": "c",
    "settings": "s",
    "task": "a",
    "episode": 0,
    "scene_seed": 1,
    "rlmtl": "v",
    "success": True,
    "steps": 3,
    "failure": "",
    "error": "",
    "attempts": 1,
}


def write_lines(path, *lines: bytes) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


@pytest.mark.parametrize(
    "bad",
    [
        {"success": "false"},  # bool("false") is True: a string must not count as a success
        {"success": 1},
        {"steps": 1e400},  # inf
        {"steps": -1},
        {"steps": True},
        {"episode": "0"},
        {"rlmtl": None},
    ],
)
def test_mistyped_records_are_skipped_with_a_warning(tmp_path, capsys, bad):
    path = tmp_path / "eval_episodes.jsonl"
    write_lines(path, json.dumps({**RECORD, **bad}).encode(), json.dumps({**RECORD, "episode": 1}).encode())
    assert [r["episode"] for r in read_log(path)] == [1]
    assert f"{path}:1: unreadable line skipped" in capsys.readouterr().err


def test_an_error_record_needs_no_outcome(tmp_path):
    path = tmp_path / "eval_episodes.jsonl"
    error = {k: v for k, v in RECORD.items() if k not in ("success", "steps", "failure")}
    write_lines(path, json.dumps({**error, "error": "worker crashed"}).encode())
    assert [r["error"] for r in read_log(path)] == ["worker crashed"]


def test_deeply_nested_json_is_an_unreadable_line_not_a_recursion_error(tmp_path, capsys):
    path = tmp_path / "eval_episodes.jsonl"
    write_lines(path, b"[" * 50_000, json.dumps(RECORD).encode())
    assert len(list(read_log(path))) == 1
    assert "unreadable line skipped" in capsys.readouterr().err


def test_an_over_long_line_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "eval_episodes.jsonl"
    write_lines(path, json.dumps(RECORD).encode(), b" " * (MAX_LINE_BYTES + 1))
    with pytest.raises(OutputError, match=rf"{path}:2: a line of over {MAX_LINE_BYTES} bytes"):
        read_logs(tmp_path)


def test_a_sparse_log_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "eval_episodes.jsonl"
    path.write_bytes(b"")
    os.truncate(path, 64 << 30)  # 64 GiB of zeros on paper, nothing on disk
    with pytest.raises(OutputError, match="a line of over"):
        read_logs(tmp_path)


def test_cutting_a_torn_tail_reads_only_the_tail(tmp_path):
    path = tmp_path / "eval_episodes.jsonl"
    write_lines(path, json.dumps(RECORD).encode())
    with open(path, "ab") as handle:
        handle.write(b"x" * (3 * MAX_LINE_BYTES))  # a torn line longer than one block
    with EpisodeLog(path) as log:
        log.append({**RECORD, "episode": 1})
    assert [r["episode"] for r in read_log(path)] == [0, 1]
