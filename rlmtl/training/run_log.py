"""A run's logs: TensorBoard events (`tb/`) and `metrics.jsonl`, written by rank 0 only; a write
that fails (full disk, a `tb/` the user cannot write) is an `OutputError` naming the file.

The trainer writes the training curves (`RunLog`); `rlmtl run` adds its final evaluation to the
same `tb/` (`log_final_evaluation`): the success rates, the hyper-parameters with the final mean
success (TensorBoard's HPARAMS tab), and the evaluation videos as animated GIF images (TensorBoard's
IMAGES tab), which is what `SummaryWriter.add_video` writes, without its moviepy dependency.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rlmtl.atomic import write_text_atomic
from rlmtl.errors import OutputError
from rlmtl.training.tb_events import EventFile

if TYPE_CHECKING:
    from rlmtl.config import RunConfig
    from rlmtl.evaluation.results import EvalResult

METRICS_FILE = "metrics.jsonl"
FINAL_SUCCESS_TAG = "final_eval/success/mean"  # the metric of the hyper-parameter table


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines written after `step` (the checkpoint a run resumes from)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise OutputError(f"{path}: cannot read the run's metrics ({error.strerror or error})") from None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # blank, or torn by a crash mid-append
        if isinstance(record, dict) and isinstance(record.get("step", 0), int) and record.get("step", 0) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


class RunLog:
    """TensorBoard writer and metrics.jsonl of one run folder, opened at `step` (0 or the resumed one)."""

    def __init__(self, run_dir: Path, step: int, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import text

        self.run_dir = run_dir
        self.events = EventFile(run_dir / "tb", resumed_at=step)
        if step == 0:
            self.events.summary(text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "\n```"), 0)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.events.scalar(tag, value, step)

    def append(self, record: dict[str, Any]) -> None:
        """One JSON line in metrics.jsonl."""
        path = self.run_dir / METRICS_FILE
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise OutputError(f"{path}: cannot append to the run's metrics ({error.strerror or error})") from None

    def close(self) -> None:
        self.events.close()


def run_hparams(config: RunConfig) -> dict[str, str | int | float]:
    """The config values that tell runs apart in TensorBoard's hyper-parameter table, by dotted key
    (lists joined with commas: the table holds numbers, strings and booleans only)."""
    return {
        "env.suite": config.env.suite,
        "weighting.name": config.weighting.name,
        "train.seed": config.train.seed,
        "train.steps": config.train.steps,
        "train.lr": config.train.lr,
        "train.batch_per_task": config.train.batch_per_task,
        "agent.obs_keys": ",".join(config.agent.obs_keys),
        "agent.hidden_dim": config.agent.hidden_dim,
        "agent.num_layers": config.agent.num_layers,
        "data.demos_per_task": config.data.demos_per_task,
        "eval.episodes_per_task": config.eval.episodes_per_task,
    }


def log_final_evaluation(run_dir: Path, config: RunConfig, result: EvalResult, step: int) -> None:
    """Append `rlmtl run`'s final evaluation to the run's TensorBoard events (`run_dir/tb`, a file
    of its own) at `step`, the run's last step (eval.json's `step` is that of the checkpoint
    evaluated): `final_eval/success/<task>` and `final_eval/success/mean`, the hyper-parameters of
    `run_hparams` with the mean as their metric, and each video as `final_eval/video/<task>`."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.summary import hparams

    from rlmtl.evaluation.videos import tensorboard_gif

    mean = result["overall"]["success_rate"]
    events = EventFile(run_dir / "tb")
    try:
        for task, row in result["per_task"].items():
            events.scalar(f"final_eval/success/{task}", row["success_rate"], step)
        events.scalar(FINAL_SUCCESS_TAG, mean, step)
        for summary in hparams(run_hparams(config), {FINAL_SUCCESS_TAG: mean}):
            events.summary(summary, step)
        for task, path in result.get("videos", {}).items():
            try:
                gif, height, width = tensorboard_gif(Path(path))
            except OSError as error:
                raise OutputError(f"{path}: cannot read the video for TensorBoard ({error.strerror or error})") from None
            image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
            events.summary(Summary(value=[Summary.Value(tag=f"final_eval/video/{task}", image=image)]), step)
    finally:
        events.close()
