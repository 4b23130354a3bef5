"""The `rlmtl` command line: collect, train, eval, run, report, list."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

from rlmtl.atomic import write_text_atomic
from rlmtl.errors import RlmtlError

EXIT_USER_ERROR = 2


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=2000 weighting.name=uniform")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace):
    from rlmtl.config import load_config

    return load_config(args.config, args.overrides)


def cmd_collect(args: argparse.Namespace) -> int:
    from rlmtl.collect import collect

    print(collect(_load(args), force=args.force, progress=not args.no_progress))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rlmtl.train import train

    result = train(_load(args), resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after_steps)
    print(result.last_checkpoint)
    return 0


def _eval_into(run_or_checkpoint: str, out: Path, config, episodes: int | None, workers: int | None, video: bool | None, progress: bool) -> dict:
    from rlmtl.evaluate import evaluate_checkpoint, write_results

    e = config.eval
    video = e.video if video is None else video
    result = evaluate_checkpoint(
        run_or_checkpoint,
        episodes_per_task=episodes or e.episodes_per_task,
        workers=e.workers if workers is None else workers,
        seed=e.seed,
        video=video,
        video_episodes=e.video_episodes,
        video_camera=e.video_camera,
        video_size=e.video_size,
        video_dir=out / "videos",
        video_format=e.video_format,
        progress=progress,
    )
    write_results(out, result)
    return result


def cmd_eval(args: argparse.Namespace) -> int:
    from rlmtl.checkpoint import load_checkpoint, resolve_checkpoint
    from rlmtl.config import config_from_dict
    from rlmtl.evaluate import results_markdown

    checkpoint = resolve_checkpoint(args.run)
    config = config_from_dict(load_checkpoint(checkpoint)["meta"]["config"], f"{checkpoint} config")
    run_path = Path(args.run)
    out = Path(args.out) if args.out else (run_path if run_path.is_dir() else checkpoint.parent.parent)
    result = _eval_into(str(checkpoint), out, config, args.episodes, args.workers, True if args.video else None, not args.no_progress)
    print(results_markdown(result))
    print(f"wrote {out / 'eval.json'}", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """collect (cached) -> train -> evaluate -> report, in one run folder."""
    from rlmtl.collect import collect
    from rlmtl.evaluate import results_markdown
    from rlmtl.report import write_report
    from rlmtl.train import train

    config = _load(args)
    progress = not args.no_progress
    times: dict[str, float] = {}
    start = time.perf_counter()
    collect(config, progress=progress)
    times["collect"] = time.perf_counter() - start
    start = time.perf_counter()
    result = train(config, resume=args.resume, progress=progress)
    times["train"] = time.perf_counter() - start
    start = time.perf_counter()
    checkpoint = result.best_checkpoint or result.last_checkpoint
    evaluation = _eval_into(str(checkpoint), result.run_dir, config, None, None, None, progress)
    times["evaluate"] = time.perf_counter() - start
    write_text_atomic(result.run_dir / "timings.json", json.dumps({k: round(v, 1) for k, v in times.items()}, indent=2) + "\n")
    report = write_report(result.run_dir)
    print(results_markdown(evaluation))
    print(f"report: {report}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rlmtl.report import write_report

    print(write_report(Path(args.run)))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from agents.encoders import ENCODERS
    from envs import BACKENDS
    from rlmtl.weighting import WEIGHTINGS

    listing = {"backends": {}, "encoders": ENCODERS.names(), "weightings": WEIGHTINGS.names()}
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)()
        listing["backends"][name] = {suite: backend.make_suite(suite).task_names for suite in backend.suite_names}
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for name, suites in listing["backends"].items():
        for suite, tasks in suites.items():
            print(f"backend {name}, suite {suite}: {', '.join(tasks)}")
    print(f"encoders: {', '.join(listing['encoders'])}")
    print("weightings (name: what it needs from the trainer; defaults):")
    for name in listing["weightings"]:
        cls = WEIGHTINGS.get(name)
        needs = [f for f in cls.requirements.__dataclass_fields__ if getattr(cls.requirements, f)] or ["losses only"]
        defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items() if k not in ("self", "num_tasks")}
        print(f"  {name}: {', '.join(needs)}; {defaults or 'no parameters'}")
    print("  <a>+<b>: weighting a composed with gradient method b, e.g. auto_lambda+cagrad")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from rlmtl.config import field_help

    for key, default, text in field_help():
        print(f"{key:28s} {default:22s} {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlmtl", description="Multi-task behaviour cloning with pluggable loss weighting.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="collect expert demos into a dataset file (cached)")
    _config_args(p)
    p.add_argument("--force", action="store_true", help="collect again even if the dataset exists")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("train", help="train a multi-task BC agent")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--stop-after-steps", type=int, default=None, help="stop (with a checkpoint) after this many steps of this invocation")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run folder or checkpoint with headless rollouts")
    p.add_argument("run", help="run folder (uses checkpoints/last) or checkpoint file")
    p.add_argument("--episodes", type=int, default=None, help="episodes per task (default: the run's eval.episodes_per_task)")
    p.add_argument("--workers", type=int, default=None, help="rollout processes (0 = all cores)")
    p.add_argument("--video", action="store_true", help="write a video per task")
    p.add_argument("--out", default=None, help="output folder (default: the run folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("run", help="the main job: collect -> train -> eval -> report")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="resume training in an existing run folder")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="(re)write a run's report.md and plots")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="list backends, suites, tasks, encoders, weightings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("config", help="list every config key with its default and help")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options: `rlmtl train CONFIG --resume train.steps=10`
    if extra and (not hasattr(args, "overrides") or any(item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
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
