"""`launcher: slurm` submits each run through submitit's real SlurmExecutor (sbatch, sacct and srun are the
stand-ins of fake_slurm.py): the spec's resources reach the sbatch file, job ids are recorded, a rerun
does not submit a run whose job is still queued or running but submits one whose job ended without
results, and a job that runs executes the run (its lock, `rlmtl run`, its attempt record)."""

from __future__ import annotations

import json
import os

import pytest
from compare_fixtures import compare_environment, start_compare, write_spec
from fake_slurm import install_fake_slurm

pytest.importorskip("submitit")
TIMEOUT_S = 300


def slurm_spec(tmp_path, **keys):
    slurm = {"partition": "gpu", "timeout_min": 90, "cpus_per_task": 3, "mem_gb": 8, "setup": ["echo set up"], "poll_s": 0.5}
    return write_spec(tmp_path, launcher="slurm", slurm=slurm, **keys)


def environment(tmp_path):
    bin_dir = install_fake_slurm(tmp_path / "slurm-state")
    return {**compare_environment(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def submitted(tmp_path):
    return sorted(p.stem for p in (tmp_path / "slurm-state").glob("*.sbatch"))


def test_jobs_still_queued_are_not_submitted_again(tmp_path):
    spec, env = slurm_spec(tmp_path, methods=["uniform"], seeds=[0, 1, 2]), environment(tmp_path)
    log = tmp_path / "compare.log"
    first = start_compare(spec, log, "--no-wait", env=env)
    assert first.wait(TIMEOUT_S) == 7, log.read_text()  # submitted, nothing finished
    assert submitted(tmp_path) == ["1000", "1001", "1002"]
    jobs = json.loads((tmp_path / "out" / "slurm" / "jobs.json").read_text())
    assert jobs == {"toy-uniform-seed0": "1000", "toy-uniform-seed1": "1001", "toy-uniform-seed2": "1002"}
    sbatch = (tmp_path / "slurm-state" / "1000.sbatch").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --cpus-per-task=3", "#SBATCH --mem=8GB", "#SBATCH --job-name=rlmtl-toy-uniform-seed0", "echo set up"):
        assert line in sbatch
    assert "submitit.core._submit" in sbatch

    (tmp_path / "slurm-state" / "1001.state").write_text("RUNNING")
    (tmp_path / "slurm-state" / "1002.state").write_text("TIMEOUT")  # ended without results: submitted again
    second = start_compare(spec, log, "--no-wait", env=env)
    assert second.wait(TIMEOUT_S) == 7, log.read_text()
    text = log.read_text()
    assert "toy-uniform-seed0: job 1000 is PENDING; not submitted again" in text
    assert "toy-uniform-seed1: job 1001 is RUNNING; not submitted again" in text
    assert submitted(tmp_path) == ["1000", "1001", "1002", "1003"]
    assert json.loads((tmp_path / "out" / "slurm" / "jobs.json").read_text())["toy-uniform-seed2"] == "1003"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["runs"] == [] and len(results["missing"]) == 3


@pytest.mark.slow
def test_a_submitted_job_runs_the_run_and_the_comparison_waits_for_it(tmp_path):
    spec, env = slurm_spec(tmp_path, methods=["uniform"], seeds=[0]), environment(tmp_path)
    (tmp_path / "slurm-state" / "run_jobs").write_text("")
    log = tmp_path / "compare.log"
    process = start_compare(spec, log, env=env)
    assert process.wait(TIMEOUT_S) == 0, log.read_text()
    assert submitted(tmp_path) == ["1000"]
    (attempt,) = [json.loads(line) for line in (tmp_path / "out" / "state" / "toy-uniform-seed0.jsonl").read_text().splitlines()]
    assert (attempt["launcher"], attempt["job_id"], attempt["threads"], attempt["exit_code"]) == ("slurm", "1000", 3, 0)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["name"] for r in results["runs"]] == ["toy-uniform-seed0"] and results["missing"] == []
    assert "rlmtl run" in (tmp_path / "out" / "slurm" / "1000_0_log.err").read_text()
    rerun = start_compare(spec, log, env=env)  # done: nothing submitted
    assert rerun.wait(TIMEOUT_S) == 0
    assert submitted(tmp_path) == ["1000"]
