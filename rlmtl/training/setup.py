"""Build a training run's parts from its config: the run folder, the data, the agent, the optimizer,
the weighting and its engine, the samplers. Nothing here trains."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from rlmtl.agents.pretrained import load_pretrained_image_encoders
from rlmtl.atomic import write_text_atomic
from rlmtl.build import agent_meta, build_agent
from rlmtl.config import RunConfig, dataset_path
from rlmtl.data.dataset import MultiTaskData, content_digest, load_dataset, observation_bytes, read_attrs, renderer_warning
from rlmtl.data.sampler import FlatData, TaskBalancedSampler
from rlmtl.data.streaming import StreamingSampler, keys_to_stream
from rlmtl.distributed import Ranks
from rlmtl.envs import Suite
from rlmtl.errors import ConfigError, DatasetError, RlmtlError
from rlmtl.folder_lock import LOCK_NAME, FolderLock
from rlmtl.training.checkpoint import CheckpointMeta, resolve_last
from rlmtl.training.ema import ParameterAverage
from rlmtl.training.gradient_conflict import GradientConflictMonitor
from rlmtl.training.nonfinite import NonFiniteMonitor
from rlmtl.training.schedule import make_scheduler
from rlmtl.training.step import TrainingParts
from rlmtl.weighting import MultiTaskBackward, make_weighting


def prepare_run_dir(config: RunConfig, resume: bool, write: bool = True) -> tuple[Path, FolderLock | None]:
    """Create the run folder (checking it is writable) and lock it for this run; with
    `write=False` (ranks other than 0) do nothing: rank 0 checks for them. The folder must be new,
    empty, or (with `resume`) hold a run with a valid `checkpoints/last`: rlmtl does not write into
    a folder holding files it cannot account for. The trainer saves config.yaml once a resume is
    accepted. Returns (folder, its lock or None)."""
    run_dir = config.run_dir
    if not write:  # rank 0 checks and writes (a failure there stops every rank)
        return run_dir, None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / ".write-test", "ok\n")
        (run_dir / ".write-test").unlink()
    except OSError as error:
        raise RlmtlError(f"{run_dir}: run folder is not writable ({error.strerror or error})") from None
    lock = FolderLock(run_dir, "rlmtl train").acquire()
    try:
        _check_run_folder(run_dir, resume)
    except BaseException:
        lock.release()
        raise
    return run_dir, lock


def _check_run_folder(run_dir: Path, resume: bool) -> None:
    has_run = resolve_last(run_dir / "checkpoints") is not None
    if has_run and not resume:
        raise RlmtlError(f"{run_dir}: already holds a training run; pass --resume to continue it or set name=<new name>")
    if not has_run and run_dir.is_dir():
        found = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            raise RlmtlError(
                f"{run_dir}: holds {shown} but no checkpoints/last, so it is no run rlmtl can continue, and rlmtl does not "
                "write over files it cannot account for; remove the folder or set name=<new name>"
            )


def check_dataset_matches(config: RunConfig, attrs: dict[str, Any], path: Path, tasks: list[str], suite: Suite | None = None) -> None:
    """The dataset must come from the configured backend and suite, hold every task, and (given
    the suite) have the observation and action shapes the suite's environments produce."""
    for key, expected in (("backend", config.env.backend), ("suite", config.env.suite)):
        if attrs.get(key) != expected:
            raise DatasetError(f"{path}: dataset {key} is {attrs.get(key)!r} but the config asks for {expected!r}")
    missing = [t for t in tasks if t not in attrs["tasks"]]
    if missing:
        raise DatasetError(f"{path}: dataset has no task(s) {missing} (dataset tasks: {', '.join(attrs['tasks'])})")
    recorded = attrs.get("image_size")
    if recorded and config.env.cameras and int(recorded) != config.env.image_size:
        raise DatasetError(f"{path}: the dataset's images are {recorded}x{recorded} but env.image_size is {config.env.image_size}")
    spec = attrs["observation_spec"]
    absent = [k for k in config.agent.obs_keys if k not in spec]
    if absent:
        raise DatasetError(f"{path}: dataset has no observation key(s) {absent} (keys: {', '.join(spec)})")
    if suite is None:
        return
    expected = suite.observation_spec(list(config.env.cameras), config.env.image_size)
    for key in config.agent.obs_keys:
        if key in expected and tuple(spec[key]["shape"]) != tuple(expected[key].shape):
            raise DatasetError(
                f"{path}: observation {key!r} has shape {tuple(spec[key]['shape'])} but {config.env.suite} produces {tuple(expected[key].shape)}"
            )
    action = tuple(attrs["action_spec"]["shape"])
    if action != tuple(suite.action_spec().shape):
        raise DatasetError(f"{path}: actions have shape {action} but {config.env.suite} takes {tuple(suite.action_spec().shape)}")


def streamed_keys(config: RunConfig, path: Path, attrs: dict[str, Any], tasks: list[str]) -> list[str]:
    """The camera keys read from the file per batch: none unless the observations the run reads
    exceed `data.memory_budget_gb` (uncompressed, from the file's metadata)."""
    sizes = observation_bytes(path, tasks, config.agent.obs_keys)
    total = sum(sizes.values())
    if total <= config.data.memory_budget_gb * 2**30:
        return []
    keys = keys_to_stream(attrs["observation_spec"], config.agent.obs_keys)
    if keys:
        print(
            f"rlmtl: {path}: {total / 2**30:.1f} GiB of observations > data.memory_budget_gb={config.data.memory_budget_gb:g}: "
            f"reading {', '.join(keys)} from the file per batch",
            file=sys.stderr,
        )
    return keys


def load_training_data(config: RunConfig, tasks: list[str], suite: Suite) -> tuple[MultiTaskData, CheckpointMeta]:
    """The run's dataset, checked against the config and the suite, and the checkpoint metadata."""
    path = dataset_path(config)
    attrs = read_attrs(path)
    check_dataset_matches(config, attrs, path, tasks, suite)
    action_dim = attrs["action_spec"]["shape"][0]
    streamed = streamed_keys(config, path, attrs, tasks)
    unknown = [task for task in config.data.train_demos if task not in tasks]
    if unknown:
        raise ConfigError(f"'data.train_demos.{unknown[0]}': {unknown[0]!r} is not a task of this run ({', '.join(tasks)})")
    data = load_dataset(path, tasks, config.agent.obs_keys, action_dim, stream_keys=streamed, demo_limits=config.data.train_demos)
    meta = agent_meta(config, tasks, attrs["observation_spec"], action_dim)
    meta["dataset"] = {"path": str(path), "fingerprint": attrs.get("fingerprint", ""), "sha256": content_digest(path)}
    if attrs.get("renderer"):
        meta["dataset"]["renderer"] = str(attrs["renderer"])
    warning = renderer_warning(path, attrs.get("renderer"), suite.renderer(config.env.options), "training (env.options.render_mode)")
    if warning:
        print(f"rlmtl train: {warning}", file=sys.stderr)
    return data, meta


def build_parts(
    config: RunConfig,
    tasks: list[str],
    data: MultiTaskData,
    meta: CheckpointMeta,
    ranks: Ranks,
    device: torch.device,
    pretrained: dict[str, torch.Tensor] | None = None,
) -> TrainingParts:
    """The agent (seeded with `train.seed`), fused AdamW, schedule, weighting and engine, samplers,
    the non-finite monitor, (with `diagnostics.every`) the gradient-conflict monitor and (with
    `train.ema_decay`) the weights' moving average. `pretrained`: the image-encoder weights of
    `agent.pretrained_image_encoder`, as `check_pretrained_image_encoder` read them."""
    cfg = config.train
    torch.manual_seed(cfg.seed)
    agent = build_agent(meta)
    if pretrained is not None:  # `agent.pretrained_image_encoder`, read and checked when the trainer started
        load_pretrained_image_encoders(agent.encoder.image_encoders, pretrained, config.agent.pretrained_image_encoder)
    agent.set_statistics([t.stats for t in data.per_task])
    agent.to(device)
    # fused: its step reads `found_inf` (skips a non-finite step on the device, no host sync)
    optimizer = torch.optim.AdamW(agent.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    scheduler = make_scheduler(optimizer, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
    unknown = [t for t in config.weighting.primary_tasks if t not in tasks]
    if unknown:
        raise ConfigError(f"weighting.primary_tasks: {unknown} are not tasks of this run ({', '.join(tasks)})")
    primary = [tasks.index(t) for t in config.weighting.primary_tasks]
    try:
        weighting = make_weighting(config.weighting.name, len(tasks), config.weighting.params).to(device)
        balance = MultiTaskBackward.for_agent(
            agent, weighting, optimizer, primary_tasks=primary, reducer=ranks, skip_nonfinite=True, grad_clip=cfg.grad_clip
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"weighting {config.weighting.name!r}: {error}") from None
    if cfg.batch_per_task % ranks.world_size:
        raise ConfigError(f"train.batch_per_task={cfg.batch_per_task} is not divisible by the {ranks.world_size} ranks")
    rank, world = ranks.rank, ranks.world_size
    streamed = [key for key in config.agent.obs_keys if data.per_task and key not in data.per_task[0].observations]
    flat = FlatData.build(data, [key for key in config.agent.obs_keys if key not in streamed], device)  # shared by both samplers

    horizon = agent.action_horizon  # an action-chunking head trains on the next H actions

    def sampler_with_seed(seed: int) -> TaskBalancedSampler | StreamingSampler:
        if streamed:
            return StreamingSampler(data, flat, streamed, cfg.batch_per_task, seed, device, rank, world, horizon=horizon)
        return TaskBalancedSampler(flat, cfg.batch_per_task, seed, device, rank, world, horizon)

    sampler = sampler_with_seed(cfg.seed)
    val_sampler = sampler_with_seed(cfg.seed + 1) if weighting.requirements.val_batch else None
    nonfinite = NonFiniteMonitor(len(tasks), cfg.max_nonfinite_steps, device)
    every = config.diagnostics.every
    conflict = GradientConflictMonitor(len(tasks), every) if every and len(tasks) > 1 else None  # one task: no pairs
    ema = ParameterAverage(agent, cfg.ema_decay) if cfg.ema_decay > 0 else None
    autocast_device = device.type if cfg.precision == "bf16" else None
    return TrainingParts(
        tasks, agent, optimizer, scheduler, weighting, balance, sampler, val_sampler, nonfinite, conflict, ema=ema, autocast_device=autocast_device
    )


VAL_SAMPLES_PER_TASK = 512  # held-out samples per task of the validation loss (data.val_demos)


def validation_batch(held_out: MultiTaskData, agent: Any, config: RunConfig, device: torch.device) -> dict[str, Any]:
    """A fixed [K, VAL_SAMPLES_PER_TASK] sample of the held-out demos, drawn once (seeded by
    train.seed, from a generator of its own: the training stream is untouched)."""
    flat = FlatData.build(held_out, config.agent.obs_keys, device)
    sampler = TaskBalancedSampler(flat, VAL_SAMPLES_PER_TASK, config.train.seed + 2, device, horizon=agent.action_horizon)
    return sampler.sample()
