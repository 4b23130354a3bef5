"""A stand-in for SLURM's sbatch, sacct and srun, so submitit's real SlurmExecutor can be tested here.

`install_fake_slurm(folder)` writes `folder/bin/{sbatch,sacct,srun}` and returns that bin folder (put it
first on PATH). State lives in `folder`:
- `sbatch FILE`: a new job id (1000, 1001, ...), FILE copied to `<id>.sbatch`, state PENDING in `<id>.state`,
  "Submitted batch job <id>" printed. If the file `run_jobs` exists, the job runs at once in the background
  (`bash FILE` with SLURM_JOB_ID and the other variables of a one-task job): RUNNING, then COMPLETED or FAILED.
- `sacct -o JobID,State,NodeList --parsable2 -j ID ...`: each known job's state.
- `srun --unbuffered --output OUT --error ERR CMD...`: CMD with its output in OUT / ERR (%j, %t replaced).
A test sets a job's state by writing `<id>.state`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

STATE_ENV = "FAKE_SLURM_DIR"


def install_fake_slurm(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    for command in ("sbatch", "sacct", "srun"):
        script = bin_dir / command
        script.write_text(f'#!/bin/sh\n{STATE_ENV}="{folder}" exec "{sys.executable}" "{__file__}" {command} "$@"\n')
        script.chmod(0o755)
    return bin_dir


def _sbatch(state: Path, arguments: list[str]) -> int:
    counter = state / "next_id"
    job_id = int(counter.read_text()) if counter.is_file() else 1000
    counter.write_text(str(job_id + 1))
    script = Path(arguments[-1])
    shutil.copy(script, state / f"{job_id}.sbatch")
    (state / f"{job_id}.state").write_text("PENDING")
    if (state / "run_jobs").exists():
        subprocess.Popen(
            [sys.executable, __file__, "_run", str(job_id), str(script)],
            env={**os.environ, STATE_ENV: str(state)},
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    print(f"Submitted batch job {job_id}")
    return 0


def _run(state: Path, job_id: str, script: str) -> int:
    (state / f"{job_id}.state").write_text("RUNNING")
    environment = {
        **os.environ,
        "SLURM_JOB_ID": job_id,
        "SLURM_NTASKS": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
    }
    code = subprocess.call(["bash", script], env=environment)
    (state / f"{job_id}.state").write_text("COMPLETED" if code == 0 else "FAILED")
    return code


def _sacct(state: Path, arguments: list[str]) -> int:
    ids = [arguments[i + 1] for i, item in enumerate(arguments) if item == "-j"]
    print("JobID|State|NodeList")
    for job_id in ids:
        path = state / f"{job_id}.state"
        if path.is_file():
            print(f"{job_id}|{path.read_text().strip()}|localhost")
    return 0


def _srun(arguments: list[str]) -> int:
    outputs: dict[str, str] = {}
    while arguments and arguments[0].startswith("--"):
        option = arguments.pop(0)
        if option in ("--output", "--error"):
            outputs[option] = arguments.pop(0).replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", "0")
    with open(outputs.get("--output", os.devnull), "a") as out, open(outputs.get("--error", os.devnull), "a") as err:
        return subprocess.call(arguments, stdout=out, stderr=err)


def main(argv: list[str]) -> int:
    command, arguments = argv[0], argv[1:]
    state = Path(os.environ[STATE_ENV])
    if command == "sbatch":
        return _sbatch(state, arguments)
    if command == "_run":
        return _run(state, arguments[0], arguments[1])
    if command == "sacct":
        return _sacct(state, arguments)
    if command == "srun":
        return _srun(arguments)
    raise SystemExit(f"fake_slurm: unknown command {command}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
