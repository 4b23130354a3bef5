"""Checks that scripts/docker_smoke.sh runs inside the rlmtl container (with the image's own Python).

    python docker_smoke_check.py isolation OUT            non-root, no network, read-only root, OUT writable
    python docker_smoke_check.py outputs OUT TASKS EPISODES   eval.json (TASKS x EPISODES) and non-blank videos

Each check prints one line per fact it verified and exits 1 with the reason on the first failure.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path

MIN_FRAMES = 5
MIN_PIXEL_STD = 10.0  # a blank (single-colour) frame has std 0; a rendered MuJoCo scene is far above this


class CheckFailed(Exception):
    """A smoke expectation that does not hold."""


def check_isolation(out: Path) -> list[str]:
    """The container runs as a non-root user, without a network, and can write only to the mounted OUT folder."""
    facts = []
    uid = os.getuid()
    if uid == 0:
        raise CheckFailed("the container runs as root (uid 0)")
    facts.append(f"uid {uid} (non-root)")
    interfaces = sorted(os.listdir("/sys/class/net"))
    if interfaces != ["lo"]:
        raise CheckFailed(f"network interfaces besides loopback: {interfaces}")
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=3).close()
        raise CheckFailed("a TCP connection to 1.1.1.1:53 succeeded")
    except OSError as error:
        facts.append(f"no network (only lo; connect fails: {error.strerror or error})")
    for folder in (Path.home(), Path("/opt/rlmtl"), Path("/var/tmp")):
        try:
            (folder / ".rlmtl_write_probe").write_text("x")
        except OSError as error:
            if error.errno not in (errno.EROFS, errno.EACCES):
                raise
            continue
        raise CheckFailed(f"{folder} is writable: results could land outside the mounted output folder")
    facts.append("root filesystem read-only (home, /opt/rlmtl, /var/tmp)")
    probe = out / ".rlmtl_write_probe"
    probe.write_text("x")
    probe.unlink()
    facts.append(f"{out} writable")
    return facts


def gif_stats(path: Path) -> tuple[int, float, float]:
    """(frames, pixel std over the whole clip, largest per-frame std) of a video file."""
    import imageio.v2 as imageio
    import numpy as np

    frames = np.stack(imageio.mimread(path, memtest=False)).astype(np.float32)
    per_frame = frames.reshape(frames.shape[0], -1).std(axis=1)
    return frames.shape[0], float(frames.std()), float(per_frame.max())


def check_outputs(out: Path, tasks: list[str], episodes: int) -> list[str]:
    """eval.json covers exactly TASKS with EPISODES each, and every task's video has frames that are not blank."""
    path = out / "eval.json"
    if not path.is_file():
        raise CheckFailed(f"{path} missing")
    result = json.loads(path.read_text())
    per_task = result.get("per_task", {})
    if sorted(per_task) != sorted(tasks):
        raise CheckFailed(f"{path}: per_task has {sorted(per_task)}, expected {sorted(tasks)}")
    for task, row in per_task.items():
        if row.get("episodes") != episodes or row.get("errors"):
            raise CheckFailed(
                f"{path}: {task} has {row.get('episodes')} episodes and {row.get('errors')} errors, expected {episodes} and 0"
            )
    total = result.get("overall", {}).get("episodes")
    if total != episodes * len(tasks) or len(result.get("episodes", [])) != total:
        raise CheckFailed(
            f"{path}: overall.episodes {total} and {len(result.get('episodes', []))} episode records, expected {episodes * len(tasks)}"
        )
    facts = [f"eval.json: {len(tasks)} tasks x {episodes} episodes, mean success {result['overall']['success_rate']:.2f}"]
    videos = result.get("videos", {})
    for task in tasks:
        video = out / "videos" / Path(videos.get(task, f"{task}.gif")).name
        if not video.is_file():
            raise CheckFailed(f"video of {task} missing: {video}")
        frames, std, frame_std = gif_stats(video)
        if frames < MIN_FRAMES or std < MIN_PIXEL_STD or frame_std < MIN_PIXEL_STD:
            raise CheckFailed(f"{video}: {frames} frames, pixel std {std:.1f} (max per frame {frame_std:.1f}); blank or too short")
        facts.append(f"{video.name}: {frames} frames, pixel std {std:.1f}")
    return facts


def main(argv: list[str]) -> int:
    """Run one check; print what held, or the reason it failed (exit 1)."""
    try:
        if len(argv) == 2 and argv[0] == "isolation":
            facts = check_isolation(Path(argv[1]))
        elif len(argv) == 4 and argv[0] == "outputs":
            facts = check_outputs(Path(argv[1]), argv[2].split(","), int(argv[3]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except CheckFailed as failure:
        print(f"docker_smoke_check {argv[0]}: FAILED: {failure}", file=sys.stderr)
        return 1
    for fact in facts:
        print(f"docker_smoke_check {argv[0]}: {fact}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
