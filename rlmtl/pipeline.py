"""The main job, one pipeline for one model and for one model per task group:

    collect (cached) -> train -> evaluate -> report

`rlmtl run CONFIG` trains one model on every task; `rlmtl run CONFIG --groups G.json` (and
`rlmtl train --groups`) trains one model per group (rlmtl/tag/grouped.py) through the same
`train_and_evaluate` stage, which also adds the final evaluation (success rates, hyper-parameters,
videos) to the run's TensorBoard events. Each stage's wall time goes to the run folder's `timings.json`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from rlmtl.atomic import write_text_atomic
from rlmtl.config import RunConfig
from rlmtl.distributed import Ranks
from rlmtl.errors import OutputError
from rlmtl.evaluation.results import EvalResult
from rlmtl.evaluation.settings import EvalSettings
from rlmtl.evaluation.videos import check_video_writer
from rlmtl.folder_lock import FolderLock

if TYPE_CHECKING:
    from rlmtl.tag.grouped import GroupPlan


class StageTimes:
    """Wall time of each named stage, written to `timings.json` (seconds, one decimal)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start

    def write(self, folder: Path) -> None:
        write_text_atomic(folder / "timings.json", json.dumps({k: round(v, 1) for k, v in self.seconds.items()}, indent=2) + "\n")


def evaluate_into(checkpoint: str | Path, out: Path, settings: EvalSettings, ranks: Ranks | None = None) -> EvalResult | None:
    """Evaluate into `out` (locked meanwhile: one rlmtl process per folder) and write eval.json /
    eval.md there; with `ranks` of a torchrun job, this rank's share, and None on ranks other than 0."""
    from rlmtl.evaluation.evaluate import evaluate_checkpoint
    from rlmtl.evaluation.results import write_results

    with FolderLock(out, "rlmtl eval") if ranks is None or ranks.is_main else nullcontext():
        result = evaluate_checkpoint(checkpoint, settings, out=out, shard_of=ranks)
        if result is None:
            return None
        try:
            write_results(out, result)
        except OSError as error:
            raise OutputError(f"output folder {out}: cannot write eval.json / eval.md ({error.strerror or error})") from None
    return result


def train_and_evaluate(
    config: RunConfig, settings: EvalSettings, resume: bool, progress: bool, times: StageTimes, label: str = ""
) -> tuple[Path, Path, EvalResult]:
    """Train `config` (resuming when asked), evaluate its best (else last) checkpoint into its run
    folder and add that evaluation to the run's TensorBoard events; returns (run folder,
    checkpoint, result). Stages are timed as `train<label>`, `evaluate<label>`."""
    from rlmtl.training.run_log import log_final_evaluation
    from rlmtl.training.trainer import train

    with times.stage(f"train{label}"):
        trained = train(config, resume=resume, progress=progress)
    checkpoint = trained.best_checkpoint or trained.last_checkpoint
    with times.stage(f"evaluate{label}"):  # a resumed run also resumes its evaluation
        result = evaluate_into(checkpoint, trained.run_dir, dataclasses.replace(settings, resume=resume))
        assert result is not None
        log_final_evaluation(trained.run_dir, config, result, trained.step)
    return trained.run_dir, checkpoint, result


def run_main_job(
    config: RunConfig, plan: "GroupPlan | None" = None, resume: bool = False, progress: bool = True
) -> tuple[Path, EvalResult]:
    """collect -> train -> evaluate -> report, for one model or (with `plan`) one per task group;
    returns (the folder holding eval.json and report.md, the evaluation)."""
    from rlmtl.build import check_head_fits_suite, check_pretrained_image_encoder
    from rlmtl.data.collect import collect
    from rlmtl.envs import make_suite
    from rlmtl.report import write_report

    check_video_writer(config.eval.video, config.eval.video_format)  # before training, not after it
    check_head_fits_suite(config, make_suite(config.env.backend, config.env.suite))  # before collecting
    check_pretrained_image_encoder(config)
    times = StageTimes()
    if plan is None:
        with times.stage("collect"):
            collect(config, progress=progress)
        settings = EvalSettings.from_config(config.eval, progress=progress)
        folder, _, result = train_and_evaluate(config, settings, resume, progress, times)
        extra = ""
    else:
        from rlmtl.tag.grouped import groups_markdown, prepare_group_folder, train_groups

        folder = prepare_group_folder(config, plan)
        with times.stage("collect"):
            dataset = collect(config, progress=progress)
        result = train_groups(config, plan, folder, dataset, resume, progress, times)
        extra = groups_markdown(plan, list(result["per_task"]))
    times.write(folder)
    write_report(folder, extra=extra)
    return folder, result
