"""The `rlmtl` command line: collect, train, eval, run, compare, affinity, import-rlbench, export, import, report, list, config.

Each subcommand is a thin wrapper: it loads the config (YAML + dotted overrides), calls the stage
in its package (rlmtl/data, rlmtl/training, rlmtl/evaluation, rlmtl/tag, rlmtl/pipeline.py) and
turns an `RlmtlError` into one line on stderr and its exit code (rlmtl/errors.py).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from rlmtl import __version__
from rlmtl.atomic import write_text_atomic
from rlmtl.errors import EXIT_USER_ERROR, CheckpointError, ConfigError, OutputError, RlmtlError, SuccessBelowBar

EVAL_EPILOG = """\
exit codes:
  0  evaluated; every bar set by --min-success / --min-task-success is met
  2  usage or input error (bad argument, a bar outside [0, 1], bad config)
  3  checkpoint missing, corrupt or not matching its config
  4  output folder missing (--out or the --junit / $GITHUB_STEP_SUMMARY folder) or not writable
  5  success below a bar: eval.json, eval.md and the reports are written first,
     then each shortfall (task, success, episodes, bar) is printed to stderr
  6  some episodes ended in an error (a worker crashed or hung on every rerun): the results
     are written, the errors listed; those episodes are not in the success rates

Finished episodes are appended to OUT/eval_episodes.jsonl; the same command with --resume
continues an interrupted evaluation from it. Without --resume an OUT that holds such a log is
refused (exit 4): a gate counts only episodes it ran, unless asked. Sharded over processes or
machines (OUT shared):
  torchrun --nproc-per-node=2 -m rlmtl eval runs/mt10 --out runs/mt10

CI example:
  rlmtl eval runs/mt10 --min-success 0.8 --min-task-success 0.5 --junit reports/eval.xml --github-summary
"""


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=2000 weighting.name=uniform")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace):
    from rlmtl.config import load_config

    return load_config(args.config, args.overrides)


def cmd_collect(args: argparse.Namespace) -> int:
    from rlmtl.data.collect import collect

    print(collect(_load(args), force=args.force, progress=not args.no_progress))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rlmtl.training.trainer import train

    if args.groups:
        return _run_main_job(args)
    if args.k is not None:
        raise RlmtlError("--k needs --groups")
    result = train(_load(args), resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after_steps)
    print(result.last_checkpoint)
    return 0


def _run_main_job(args: argparse.Namespace) -> int:
    """collect -> train -> evaluate -> report (rlmtl/pipeline.py); with `--groups G.json`, one model
    per group, each task evaluated with its serving group's model."""
    from rlmtl.evaluation.results import episode_errors, results_markdown
    from rlmtl.pipeline import run_main_job

    if getattr(args, "stop_after_steps", None) is not None and args.groups:
        raise RlmtlError("--stop-after-steps does not apply to --groups (use --resume to continue a grouped run)")
    if args.k is not None and not args.groups:
        raise RlmtlError("--k needs --groups")
    config = _load(args)
    plan = None
    if args.groups:
        from rlmtl.envs import make_suite
        from rlmtl.tag.grouped import load_group_plan

        tasks = make_suite(config.env.backend, config.env.suite).select_tasks(config.env.tasks)
        plan = load_group_plan(args.groups, tasks, args.k)
    folder, result = run_main_job(config, plan, resume=args.resume, progress=not args.no_progress)
    print(results_markdown(result))
    print(f"report: {folder / 'report.md'}")
    errors = episode_errors(result)
    if errors is not None:
        raise errors
    return 0


def _success_bar(text: str) -> float:
    """argparse type of --min-success / --min-task-success: a success rate in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a success rate in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"a success rate must be in [0, 1], got {text}")
    return value


def _count(minimum: int):
    """argparse type: an integer >= `minimum` (a usage error, exit 2, otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _check_output_folder(folder: Path, what: str, must_exist: bool = True) -> None:
    """OutputError (exit 4) unless `folder` exists, is a folder and accepts a file. rlmtl never
    creates a folder named on the command line: a missing one is usually an unmounted volume."""
    if not folder.exists():
        if must_exist:
            raise OutputError(f"{what} {folder} does not exist (mount it or create it)")
        return
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(f"{what} {folder} is not writable ({error.strerror or error})") from None


def _load_for_eval(run: str):
    """The checkpoint path and its config; CheckpointError (exit 3) when it is missing, corrupt,
    or its config or weights cannot rebuild the agent."""
    from rlmtl.build import agent_from_checkpoint
    from rlmtl.config import config_from_dict
    from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint

    checkpoint = resolve_checkpoint(run)
    payload = load_checkpoint(checkpoint)
    try:
        config = config_from_dict(payload["meta"]["config"], f"{checkpoint} config")
        agent_from_checkpoint(payload)  # fail here, not inside a rollout worker
    except CheckpointError as error:  # weights not matching the config: name the file
        raise CheckpointError(f"{checkpoint}: {error}") from None
    except ConfigError as error:
        raise CheckpointError(f"{checkpoint}: unusable checkpoint ({error})") from None
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{checkpoint}: not an rlmtl checkpoint (bad metadata: {error})") from None
    return checkpoint, config


def _default_eval_folder(run: Path, checkpoint: Path) -> Path:
    """Where `rlmtl eval` writes without --out: the run folder named, or the run folder of a
    checkpoint in `<run>/checkpoints/`; any other checkpoint file needs --out."""
    if run.is_dir():
        return run
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent
    raise RlmtlError(f"{checkpoint}: not in a run folder (<run>/checkpoints/), so there is no folder for its results: give --out")


def cmd_eval(args: argparse.Namespace) -> int:
    from rlmtl.evaluation.gate import check_success, github_summary, junit_xml
    from rlmtl.evaluation.results import episode_errors, results_markdown

    checkpoint, config = _load_for_eval(args.run)
    run_path = Path(args.run)
    out = Path(args.out) if args.out else _default_eval_folder(run_path, checkpoint)
    # every output is checked before the (long) rollouts
    _check_output_folder(out, "output folder", must_exist=bool(args.out))
    junit = Path(args.junit) if args.junit else None
    if junit is not None:
        if junit.is_dir():
            raise OutputError(f"--junit {junit} is a folder; give a file path, e.g. {junit / 'rlmtl-eval.xml'}")
        _check_output_folder(junit.parent, "--junit folder")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY") if args.github_summary else None
    if step_summary:
        _check_output_folder(Path(step_summary).parent, "GITHUB_STEP_SUMMARY folder")

    from rlmtl.distributed import Ranks
    from rlmtl.evaluation.settings import EvalSettings
    from rlmtl.pipeline import evaluate_into

    settings = EvalSettings.from_config(
        config.eval,
        episodes_per_task=args.episodes,
        workers=args.workers,
        envs_per_worker=args.envs_per_worker,
        video=args.video,
        video_format=args.video_format,
        progress=not args.no_progress,
        resume=args.resume,
    )
    result = evaluate_into(checkpoint, out, settings, Ranks.from_env_vars())
    if result is None:  # a torchrun rank other than 0: rank 0 gathers and reports
        return 0
    bars = {"min_success": args.min_success, "min_task_success": args.min_task_success}
    if junit is not None:
        try:
            write_text_atomic(junit, junit_xml(result, **bars))
        except OSError as error:
            raise OutputError(f"--junit {junit}: cannot write ({error.strerror or error})") from None
    summary = github_summary(result, **bars) if args.github_summary else None
    if summary is not None and step_summary:
        try:  # appended, as GitHub expects, not replaced
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(summary + "\n")
        except OSError as error:
            raise OutputError(f"GITHUB_STEP_SUMMARY {step_summary}: cannot append ({error.strerror or error})") from None
    print(summary if summary is not None and not step_summary else results_markdown(result))
    print(f"wrote {out / 'eval.json'}" + (f", {junit}" if junit is not None else ""), file=sys.stderr)
    shortfalls = check_success(result, **bars)
    errors = episode_errors(result)
    if errors is not None:  # rates over fewer episodes than asked: exit 6 before judging the bars
        if shortfalls:
            print(f"rlmtl eval: {SuccessBelowBar(shortfalls)}", file=sys.stderr)
        raise errors
    if shortfalls:
        raise SuccessBelowBar(shortfalls)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """collect (cached) -> train -> evaluate -> report, in one run folder."""
    return _run_main_job(args)


def cmd_compare(args: argparse.Namespace) -> int:
    """methods x seeds x settings of a spec, resumable, locally or on SLURM -> results.json, results.md, figure."""
    from rlmtl.compare.comparison import run_comparison

    return run_comparison(args.spec, dry_run=args.dry_run, report_only=args.report_only, wait=not args.no_wait)


COMPARE_EPILOG = """\
exit codes:
  0  every run has results; results.json, results.md and comparison.png (+ .pdf) are written in OUT
  2  bad spec (one line naming the spec file and the key), a run config that does not load, a run
     folder in OUT that rlmtl compare did not write, or rliable / submitit missing
  4  OUT is in use by another rlmtl compare, or cannot be written
  7  some runs have no results (failed: see OUT/logs/<run>.log or the SLURM log named; or, with
     --no-wait, still queued): the results of the finished ones are written
  130  stopped (SIGINT or SIGTERM): the runs were stopped too; the same command continues

Run again, the same command skips finished runs, resumes interrupted ones from their checkpoints,
and never starts a run that another process is running.
"""


def cmd_affinity(args: argparse.Namespace) -> int:
    """collect (cached) -> train with TAG's affinity probe -> affinity.json, heatmap, groupings."""
    from dataclasses import replace

    from rlmtl.data.collect import collect
    from rlmtl.tag.probe import DEFAULT_PROBE_EVERY
    from rlmtl.tag.report import write_affinity
    from rlmtl.training.trainer import Trainer

    config = _load(args)
    if config.affinity.probe_every == 0:
        config = replace(config, affinity=replace(config.affinity, probe_every=DEFAULT_PROBE_EVERY))
    if not config.name:
        config = replace(config, name=f"{config.env.suite}-affinity-seed{config.train.seed}")
    collect(config, progress=not args.no_progress)
    trainer = Trainer(config, resume=args.resume, progress=not args.no_progress)
    trainer.run()
    assert trainer.probe is not None
    matrix = trainer.probe.affinity().cpu().double().numpy()
    content = write_affinity(trainer.run_dir, trainer.parts.tasks, matrix, config.affinity.max_groups, config.affinity.divide_by_lr)
    for k, ranked in content["groupings"].items():
        if ranked:
            print(f"k={k}: " + " | ".join(", ".join(group) for group in ranked[0]["groups"]) + f"  (score {ranked[0]['score']:.3g})")
    print(f"wrote {trainer.run_dir / 'affinity.json'}", file=sys.stderr)
    return 0


def cmd_import_rlbench(args: argparse.Namespace) -> int:
    """RLBench dataset folder -> rlmtl dataset file (no simulator needed)."""
    from rlmtl.data.import_rlbench import import_rlbench

    renderer = {"renderer": args.renderer} if args.renderer is not None else {}  # import_rlbench checks it and knows the default
    print(import_rlbench(args.path, _load(args), out=args.out, samples=args.samples, progress=not args.no_progress, **renderer))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """rlmtl dataset -> robomimic HDF5 or a LeRobot dataset folder."""
    if args.format == "robomimic":
        from rlmtl.data.robomimic_io import export_robomimic

        if args.fps is not None:
            raise RlmtlError("--fps applies to --format lerobot")
        print(export_robomimic(args.dataset, args.out, per_task_files=args.per_task_files, progress=not args.no_progress))
    else:
        from rlmtl.data.lerobot_io import export_lerobot

        if args.per_task_files:
            raise RlmtlError(
                "--per-task-files applies to --format robomimic (a LeRobot dataset holds every task, each with its task string)"
            )
        print(export_lerobot(args.dataset, args.out, fps=args.fps, progress=not args.no_progress))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """robomimic HDF5 file(s) or a LeRobot dataset folder -> rlmtl dataset file."""
    from rlmtl.data.interchange import parse_task_choices

    choices = parse_task_choices(args.task)
    options = {"backend": args.backend, "suite": args.suite, "progress": not args.no_progress}
    if args.format == "robomimic":
        from rlmtl.data.robomimic_io import import_robomimic

        print(import_robomimic(args.sources, args.out, choices, **options))
    else:
        from rlmtl.data.lerobot_io import import_lerobot

        if len(args.sources) != 1:
            raise RlmtlError(f"--format lerobot reads one dataset folder, got {len(args.sources)} sources")
        print(import_lerobot(args.sources[0], args.out, choices, **options))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlmtl.report import write_report

    try:
        print(write_report(Path(args.run)))
    except OSError as error:  # a read-only run folder, a full disk
        raise OutputError(f"{args.run}: cannot write report.md and plots/ ({error.strerror or error})") from None
    return 0


def _plugin_catalogue() -> dict[str, dict[str, dict[str, object]]]:
    """Every registered backend's options and weighting's parameters: {name: {"needs": [...],
    "parameters": [{name, type, default, help}, ...]}} (backends: "options" instead)."""
    from rlmtl.config_values import option_rows
    from rlmtl.envs import BACKENDS
    from rlmtl.weighting import WEIGHTINGS
    from rlmtl.weighting.base import params_class_of

    backends = {name: {"options": option_rows(BACKENDS.get(name).options_class)} for name in BACKENDS.names()}
    weightings = {}
    for name in WEIGHTINGS.names():
        entry = WEIGHTINGS.get(name)
        requirements = getattr(entry, "requirements", None)
        needs = [f for f in getattr(requirements, "__dataclass_fields__", {}) if getattr(requirements, f)] or ["losses only"]
        weightings[name] = {"needs": needs, "parameters": option_rows(params_class_of(entry))}
    return {"backends": backends, "weightings": weightings}


def _signature(rows: list[dict[str, object]]) -> str:
    return ", ".join(f"{row['name']}: {row['type']} = {row['default']!r}" for row in rows) or "none"


def cmd_list(args: argparse.Namespace) -> int:
    from rlmtl.agents import ACTION_HEADS, AGENTS, AUGMENTATIONS, ENCODERS
    from rlmtl.agents.action_heads import head_param_names
    from rlmtl.envs import BACKENDS

    catalogue = _plugin_catalogue()
    listing: dict[str, object] = {
        "backends": {},
        "backend_options": {},
        "agents": AGENTS.names(),
        "encoders": ENCODERS.names(),
        "action_heads": {name: head_param_names(name) for name in ACTION_HEADS.names()},
        "augmentations": AUGMENTATIONS.names(),
        "weightings": catalogue["weightings"],
    }
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)()
        listing["backends"][name] = {suite: backend.make_suite(suite).task_names for suite in backend.suite_names}
        listing["backend_options"][name] = catalogue["backends"][name]["options"]
    if args.json:
        print(json.dumps(listing, indent=2, default=repr))
        return 0
    for name, suites in listing["backends"].items():
        for suite, tasks in suites.items():
            print(f"backend {name}, suite {suite}: {', '.join(tasks)}")
        print(f"backend {name} options (env.options): {_signature(listing['backend_options'][name])}")
    print(f"agents: {', '.join(listing['agents'])}")
    print(f"encoders: {', '.join(listing['encoders'])}")
    heads = listing["action_heads"]
    print("action heads (agent.head; agent.head_params): " + ", ".join(f"{n} ({', '.join(p) or 'no parameters'})" for n, p in heads.items()))
    print(f"augmentations (agent.augmentations): {', '.join(listing['augmentations'])}")
    print("weightings (name: what it needs from the trainer; parameters as name: type = default):")
    for name, method in catalogue["weightings"].items():
        print(f"  {name}: {', '.join(method['needs'])}; {_signature(method['parameters'])}")
    print("  <a>+<b>: weighting a composed with gradient method b, e.g. auto_lambda+cagrad")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """With CONFIG: the resolved config (its base files and the overrides applied) as YAML, as the trainer
    saves it in a run's config.yaml; without: every key with its default and help."""
    if args.config is not None:
        from rlmtl.config import config_to_yaml

        print(config_to_yaml(_load(args)), end="")
        return 0
    return _print_config_reference()


def _print_config_reference() -> int:
    from rlmtl.config import field_help

    for key, default, text in field_help():
        print(f"{key:28s} {default:22s} {text}")
    catalogue = _plugin_catalogue()
    sections = (
        ("env.options", "backend", {name: item["options"] for name, item in catalogue["backends"].items()}),
        ("weighting.params", "weighting", {name: item["parameters"] for name, item in catalogue["weightings"].items()}),
    )
    for prefix, kind, groups in sections:
        print(f"\n{prefix}.<key>, by {kind} (type = default, help):")
        for name, rows in groups.items():
            print(f"  {kind} {name}:" + ("" if rows else " none"))
            for row in rows:
                print(
                    f"    {prefix + '.' + str(row['name']):40s} {str(row['type']) + ' = ' + repr(row['default']):34s} {row['help']}".rstrip()
                )
    print("\n(a composition a+b takes weighting.params.<a>.<key> and weighting.params.<b>.<key>, or flat keys meaning a's)")
    return 0


def _groups_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--groups",
        default=None,
        metavar="FILE",
        help="train one model per task group (a JSON list of groups, {'groups': ..., 'serve': ...}, or an affinity.json with --k), "
        "then evaluate each task with its group's model",
    )
    parser.add_argument("--k", type=int, default=None, help="with an affinity.json: use its best grouping with at most K groups")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlmtl", description="Multi-task behaviour cloning with pluggable loss weighting.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect expert demos into a dataset file (cached)")
    _config_args(p)
    p.add_argument("--force", action="store_true", help="collect again even if the dataset exists")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("train", help="train a multi-task BC agent")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--stop-after-steps", type=int, default=None, help="stop (with a checkpoint) after this many steps of this invocation")
    _groups_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a run folder or checkpoint with headless rollouts (optionally a CI gate)",
        description="Evaluate a run folder or checkpoint with headless rollouts (writes eval.json, eval.md).\n"
        "With --min-success / --min-task-success it is a CI gate; --junit and --github-summary\n"
        "give CI systems the per-task table.",
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run folder (uses checkpoints/last) or checkpoint file")
    p.add_argument("--episodes", type=_count(1), default=None, help="episodes per task, >= 1 (default: the run's eval.episodes_per_task)")
    p.add_argument("--workers", type=_count(0), default=None, help="rollout processes (0 = all cores)")
    p.add_argument(
        "--envs-per-worker",
        type=_count(1),
        default=None,
        help="episodes each process runs at once, one policy call per step for all (default: the run's eval.envs_per_worker)",
    )
    p.add_argument(
        "--video",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write a video per task, or not (default: the run's eval.video)",
    )
    p.add_argument("--video-format", choices=["gif", "mp4"], default=None, help="video format (default: the run's eval.video_format)")
    p.add_argument("--out", default=None, help="output folder, which must exist (default: the run folder)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted evaluation: reuse the episodes in OUT's episode logs (same checkpoint content, settings, rlmtl version)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--min-success",
        type=_success_bar,
        default=None,
        metavar="X",
        help="fail (exit 5) if the mean success over tasks is below X in [0, 1]",
    )
    p.add_argument(
        "--min-task-success", type=_success_bar, default=None, metavar="X", help="fail (exit 5) if any task's success is below X in [0, 1]"
    )
    p.add_argument(
        "--junit",
        default=None,
        metavar="PATH",
        help="also write a JUnit XML report (one testcase per task, plus 'overall'); its folder must exist",
    )
    p.add_argument(
        "--github-summary",
        action="store_true",
        help="append the per-task table and the pass/fail line to the file named by $GITHUB_STEP_SUMMARY (stdout when unset)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("run", help="the main job: collect -> train -> eval -> report")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="resume training in an existing run folder")
    _groups_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "compare",
        help="run methods x seeds x settings of a spec (resumable; locally or on SLURM) -> results.json, results.md, figure",
        description="Run every (setting, method, seed) of SPEC that has no results yet, then write OUT/results.json,\n"
        "OUT/results.md and OUT/comparison.png (+ .pdf): IQM and mean success with stratified-bootstrap\n"
        "intervals and the probability of improvement over the baseline (rliable). See the README, 'Comparing methods'.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="comparison spec (YAML: out, settings, methods, seeds, ...)")
    p.add_argument("--dry-run", action="store_true", help="print each run, its state and its command; run and write nothing")
    p.add_argument("--report-only", action="store_true", help="write the results of the finished runs; run nothing")
    p.add_argument("--no-wait", action="store_true", help="launcher slurm: submit and return (exit 7 while jobs are unfinished)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("affinity", help="train with TAG's inter-task affinity probe and search task groupings")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    p.set_defaults(func=cmd_affinity)

    p = sub.add_parser(
        "import-rlbench",
        help="convert a folder written by RLBench's dataset generator into rlmtl's dataset format",
        description="Convert RLBench demos (<task>/variation<N>/episodes/... or the PerAct fork's <task>/all_variations/episodes/...)\n"
        "into the dataset file CONFIG trains from (data.path, or the cache path of its settings). No simulator needed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="the dataset generator's --save_path (one folder per task)")
    _config_args(p)
    p.add_argument("--out", default=None, help="dataset file to write (default: the config's data.path or cache path)")
    p.add_argument(
        "--samples",
        choices=["all", "keyframes"],
        default="all",
        help="keyframe mode: train on every step (all) or on step 0 and each keyframe (keyframes)",
    )
    p.add_argument(
        "--renderer",
        default=None,
        help="the renderer the dataset generator ran with, opengl or opengl3 (its --renderer; default opengl3, the generator's default)",
    )
    p.set_defaults(func=cmd_import_rlbench)

    p = sub.add_parser(
        "export",
        help="write a dataset in robomimic's HDF5 format or as a LeRobot dataset (v3.0)",
        description="Write the rlmtl dataset DATASET in another format. robomimic: one HDF5 file with data/demo_<i>\n"
        "and a filter key mask/<task> per task, or with --per-task-files a folder of <task>.hdf5 files.\n"
        "lerobot: a LeRobot v3.0 dataset folder (lerobot 0.4.x; cameras as H.264 videos), readable with\n"
        "LeRobotDataset(repo_id, root=OUT). OUT is replaced only if rlmtl exported it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dataset", help="an rlmtl dataset file (rlmtl collect, import-rlbench or import wrote it)")
    p.add_argument("out", help="robomimic: the .hdf5 file (with --per-task-files: a folder); lerobot: the dataset folder")
    p.add_argument("--format", required=True, choices=["robomimic", "lerobot"])
    p.add_argument("--per-task-files", action="store_true", help="robomimic: one file per task in the folder OUT")
    p.add_argument(
        "--fps", type=_count(1), default=None, help="lerobot: frames per second (default: the suite's step rate, 10 if it has none)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="convert robomimic HDF5 file(s) or a LeRobot dataset (v3.0) into rlmtl's dataset format",
        description="Convert SRC into the rlmtl dataset file OUT (train from it with data.path=OUT).\n"
        "robomimic: one file whose filter keys mask/<KEY> hold the tasks (--task TASK=KEY per task), or\n"
        "one file per task (one --task per file, in order). lerobot: one dataset folder; --task TASK=STRING\n"
        "selects the episodes of a task string (default: every task, named by its string). Files rlmtl\n"
        "exported need no --task. Every TASK must be a task of --backend/--suite.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="robomimic .hdf5 file(s) or a LeRobot dataset folder")
    p.add_argument("out", help="the rlmtl dataset file to write")
    p.add_argument("--format", required=True, choices=["robomimic", "lerobot"])
    p.add_argument(
        "--task",
        action="append",
        metavar="TASK[=NAME]",
        help="an rlmtl task and, if it differs, its name in SRC (robomimic filter key, LeRobot task string); repeat per task",
    )
    p.add_argument("--backend", default=None, help="backend of the tasks (default: the export's, else metaworld)")
    p.add_argument("--suite", default=None, help="suite of the tasks (default: the export's, else mt10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("report", help="(re)write a run's report.md and plots")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="list backends, suites, tasks, encoders, weightings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "config",
        help="print the resolved config of CONFIG (base files and overrides applied), or without CONFIG every key with its default and help",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config file; omit it for the reference of every key")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=2000 weighting.name=uniform")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `rlmtl` command; returns its exit code. A torchrun rank (a process that joined a process
    group) ends here instead, with `leave_process`, so that the interpreter's teardown cannot abort it."""
    from rlmtl.distributed import joined_a_process_group, leave_process

    try:
        code = _main(argv)
    except BaseException:
        if not joined_a_process_group():
            raise
        traceback.print_exc()
        leave_process(1)
    if joined_a_process_group():
        leave_process(code)
    return code


def _main(argv: list[str] | None) -> int:
    if not faulthandler.is_enabled():
        faulthandler.enable()  # a native crash (simulator, collective) prints every thread's Python stack
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options: `rlmtl train CONFIG --resume train.steps=10`
    if extra and (not hasattr(args, "overrides") or any(item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        from rlmtl.plugins import load_plugins

        load_plugins()  # `rlmtl.plugins` entry points and RLMTL_PLUGINS modules: they register backends, encoders, weightings
        return args.func(args)
    except RlmtlError as error:
        print(f"rlmtl {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyError as error:  # unknown registry names (task, backend, weighting, encoder)
        print(f"rlmtl {args.command}: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"rlmtl {args.command}: interrupted", file=sys.stderr)
        return 130
