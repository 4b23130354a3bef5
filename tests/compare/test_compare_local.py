"""`rlmtl compare` with the local launcher, end to end on the toy backend (no simulator): results.json,
results.md and the figure; killed mid-way (SIGTERM to its process group) it stops its runs, and run again
it continues without running a finished run twice; `parallel: 2` runs two at once with one thread each
(on two cores); a run held by another process is not started until that process lets go."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from compare_fixtures import probe_records, start_compare, write_spec, write_toy_config
from PIL import Image

from rlmtl.compare.local import threads_per_run
from rlmtl.folder_lock import FolderLock, lock_holder

pytestmark = pytest.mark.slow
TIMEOUT_S = 300


def wait_for(condition, what: str, timeout: float = TIMEOUT_S, process=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the comparison ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def attempts(out, name):
    path = out / "state" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_killed_comparison_resumes_without_rerunning_finished_runs(tmp_path):
    write_toy_config(tmp_path, steps=300, checkpoint_every=10)
    spec = write_spec(tmp_path, methods=["uniform", "famo", "pcgrad"], seeds=[0], parallel=1)
    out, log = tmp_path / "out", tmp_path / "compare.log"
    second = out / "runs" / "toy-famo-seed0"
    process = start_compare(spec, log)
    try:  # the first run finished, the second one training (its first checkpoint written)
        wait_for(lambda: (second / "checkpoints" / "last").is_file(), "the second run's first checkpoint", process=process)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(120) == 130, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text()
    assert "stopped toy-famo-seed0" in text
    assert lock_holder(out / "state", "toy-famo-seed0.lock") is None  # the run's process is gone
    assert not (second / "eval.json").exists()
    first_eval = out / "runs" / "toy-uniform-seed0" / "eval.json"
    first_mtime = first_eval.stat().st_mtime_ns
    assert [a["exit_code"] for a in attempts(out, "toy-famo-seed0")] == [130]  # the stopped attempt is recorded

    rerun = start_compare(spec, log)
    assert rerun.wait(TIMEOUT_S) == 0, log.read_text()
    assert first_eval.stat().st_mtime_ns == first_mtime  # not run again
    assert len(attempts(out, "toy-uniform-seed0")) == 1
    resumed = attempts(out, "toy-famo-seed0")
    assert [(a["exit_code"], a["resumed"]) for a in resumed] == [(130, False), (0, True)]
    assert "resumed" in (out / "logs" / "toy-famo-seed0.log").read_text()
    assert [a["resumed"] for a in attempts(out, "toy-pcgrad-seed0")] == [False]  # not started before the kill

    results = json.loads((out / "results.json").read_text())
    assert results["missing"] == []
    assert sorted(r["name"] for r in results["runs"]) == ["toy-famo-seed0", "toy-pcgrad-seed0", "toy-uniform-seed0"]
    famo0 = next(r for r in results["runs"] if r["name"] == "toy-famo-seed0")
    assert famo0["attempts"] == 2 and famo0["wall_s"] == pytest.approx(sum(a["wall_s"] for a in resumed), abs=0.2)
    assert set(famo0["per_task"]) == {"alpha", "beta", "gamma"}
    stats = results["statistics"]["toy"]["methods"]
    assert stats["famo"]["runs"] == 1 and stats["pcgrad"]["improvement"]["over"] == "uniform"
    assert stats["uniform"]["iqm_ci"][0] <= stats["uniform"]["iqm"] <= stats["uniform"]["iqm_ci"][1]
    markdown = (out / "results.md").read_text()
    assert "| famo | 1 |" in markdown and "P(improvement over uniform)" in markdown
    with Image.open(out / "comparison.png") as image:
        assert round(image.info["dpi"][0]) == 200
    assert (out / "comparison.pdf").read_bytes().startswith(b"%PDF")


def test_parallel_runs_at_once_with_their_share_of_the_cores(tmp_path):
    spec = write_spec(tmp_path, methods=["uniform"], seeds=[0, 1], parallel=2)
    probe, log = tmp_path / "probe.jsonl", tmp_path / "compare.log"
    process = start_compare(spec, log, probe=probe)
    assert process.wait(TIMEOUT_S) == 0, log.read_text()
    records = probe_records(probe)
    starts = {r["pid"]: r for r in records if "start" in r}
    ends = {r["pid"]: r for r in records if "end" in r}
    assert len(starts) == 2 and set(starts) == set(ends), records
    threads = threads_per_run(2)
    assert threads == max(1, len(os.sched_getaffinity(0)) // 2)
    for pid, start in starts.items():
        assert start["OMP_NUM_THREADS"] == start["MKL_NUM_THREADS"] == str(threads)
        assert ends[pid]["torch_threads"] == threads  # train.num_threads
    (a, b) = starts
    assert starts[a]["start"] < ends[b]["end"] and starts[b]["start"] < ends[a]["end"], "the two runs did not overlap"
    for name in ("toy-uniform-seed0", "toy-uniform-seed1"):
        config = (tmp_path / "out" / "runs" / name / "config.yaml").read_text()
        assert f"num_threads: {threads}" in config and f"workers: {threads}" in config.split("eval:")[1]


def test_a_run_held_by_another_process_is_not_started_until_it_is_free(tmp_path):
    spec = write_spec(tmp_path, methods=["uniform"], seeds=[0, 1], parallel=1)
    out, log = tmp_path / "out", tmp_path / "compare.log"
    (out / "state").mkdir(parents=True)
    held = FolderLock(out / "state", "a test holding the run", "toy-uniform-seed0.lock").acquire()
    process = start_compare(spec, log)
    try:
        wait_for(lambda: attempts(out, "toy-uniform-seed1"), "the other run to finish", process=process)
        assert "toy-uniform-seed0: pid" in log.read_text() and "waiting for it" in log.read_text()
        assert not (out / "runs" / "toy-uniform-seed0").exists()
        second = start_compare(spec, tmp_path / "second.log")  # one comparison per out folder
        assert second.wait(120) == 4
        assert "in use by" in (tmp_path / "second.log").read_text()
    finally:
        held.release()
    assert process.wait(TIMEOUT_S) == 0, log.read_text()
    assert len(attempts(out, "toy-uniform-seed0")) == 1
