"""One typed config that fully describes a run.

Configs are nested dataclasses loaded from YAML (`configs/*.yaml`, which may build on another file
through a top-level `base:` key, see rlmtl/config_files.py) with dotted command-line overrides
(`train.steps=2000 weighting.name=uniform`). Keys are locked: an unknown key or a value
of the wrong type is a `ConfigError` that names the file and the key. Every field carries a
`help` text, so `rlmtl config` documents the run.

Two sections belong to plug-ins and are typed by them: `env.options` is built into the options
class of `env.backend` (`Backend.options_class`, looked up in the backend registry), and
`weighting.params` is checked against the parameter class of `weighting.name`
(`Weighting.params_class()`, generated from the method's constructor). Both registries are read
at load time, after the CLI has loaded the plugins (`rlmtl.plugins` entry points, `RLMTL_PLUGINS` modules).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlmtl.config_files import read_config_file, safe_load_without_aliases, yaml_problem
from rlmtl.config_plugins import action_head_params, check_agent_name, check_agent_parts, check_weighting_name, env_options, options_class_of, weighting_params
from rlmtl.config_values import check_value
from rlmtl.errors import ConfigError


def _field(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


PRECISIONS = ("fp32", "bf16")  # train.precision

@dataclass
class EnvConfig:
    """Which simulator, which tasks, which observations."""

    backend: str = _field("metaworld", "simulator backend (see `rlmtl list`)")
    suite: str = _field("mt10", "task suite of the backend")
    tasks: list[str] = _field([], "subset of the suite's tasks; empty = all, in the suite's order")
    cameras: list[str] = _field([], "cameras to render as uint8 RGB (observation keys rgb_<camera>)")
    image_size: int = _field(64, "rendered image height and width in pixels")
    max_episode_steps: int = _field(0, "episode length; 0 = the suite's default")
    # built at load into the options class of `backend` (config_plugins.env_options); None = its defaults
    options: Any = _field(None, "options of the backend, a mapping (see `rlmtl config`: env.options.<key>)")

    def __post_init__(self) -> None:
        if self.options is None:
            options_class = options_class_of(self.backend)
            self.options = options_class() if options_class is not None else None


@dataclass
class DataConfig:
    """Demonstrations: where they live and how they are collected."""

    path: str = _field("", "dataset file; empty = a cache file under cache_dir named by the settings")
    cache_dir: str = _field("data", "folder for collected datasets")
    demos_per_task: int = _field(50, "successful expert demos to keep per task")
    steps_after_success: int = _field(
        0, "expert steps recorded after a demo's first success, so the policy sees the solved state held (0 = stop at the first success)"
    )
    train_demos: dict[str, int] = _field(
        {}, "imbalanced data: {task: N} trains on only the first N demos of those tasks (the others use all)"
    )
    val_demos: int = _field(0, "demos per task held out of training; their per-task loss is logged as val_loss/<task> (0 = none)")
    seed: int = _field(0, "seed of the demo scenes (training split)")
    workers: int = _field(0, "collection processes; 0 = all cores")
    max_attempts_per_demo: float = _field(3.0, "expert episodes allowed per requested demo before reporting a shortfall")
    attempt_timeout_s: float = _field(
        600.0, "seconds one expert episode may run before its worker is killed and the attempt rerun; 0 = no limit"
    )
    max_attempt_retries: int = _field(1, "reruns (same scene seed) of an attempt whose worker crashed or hung before it counts as failed")
    memory_budget_gb: float = _field(
        8.0, "observations larger than this (GiB, uncompressed) are not loaded whole: camera images are read from the file per batch"
    )


@dataclass
class AgentConfig:
    """The multi-task BC agent: a shared encoder and one head per task."""

    name: str = _field("bc", "the agent (see `rlmtl list`): bc is the multi-task BC agent these keys configure")
    obs_keys: list[str] = _field(["state"], "observation keys the agent reads (state, proprio, rgb_<camera>)")
    lowdim_encoder: str = _field("mlp", "encoder for vector observations (see `rlmtl list`)")
    image_encoder: str = _field("cnn", "encoder for each camera image (see `rlmtl list`)")
    hidden_dim: int = _field(256, "width of the shared MLP trunk")
    num_layers: int = _field(2, "hidden layers of the shared MLP trunk")
    image_channels: list[int] = _field([32, 64, 64], "channels of the CNN's conv layers")
    head_hidden_dim: int = _field(0, "hidden width of each task head; 0 = a linear head")
    head: str = _field("mse", "what each task head predicts and its loss: mse, gmm, chunk or keyframe (see `rlmtl list`)")
    head_params: dict[str, Any] = _field({}, "the action head's parameters (gmm: modes, min_std; chunk: horizon, ensemble_decay; keyframe: rotation_resolution; diffusion: train_steps, inference_steps, horizon, ensemble_decay, time_embedding_dim)")
    task_conditioning: bool = _field(True, "also feed a one-hot task id to the shared encoder")
    image_augment: bool = _field(True, "augment camera images during training (agent.augmentations)")
    augmentations: list[str] = _field(["shift"], "camera-image augmentations applied in order when image_augment is on: shift, crop, color")
    share_image_encoder: bool = _field(False, "one image encoder shared by every camera (else one per camera)")
    pretrained_image_encoder: str = _field("", "a state-dict file of image-encoder weights loaded before training (resnet18: torchvision's names)")


@dataclass
class WeightingConfig:
    """How the K per-task losses are combined (see `rlmtl list`)."""

    name: str = _field("uniform", "weighting method, or a composition a+b (see `rlmtl list`)")
    params: dict[str, Any] = _field({}, "the method's parameters (see `rlmtl config`: weighting.params.<key>)")
    primary_tasks: list[str] = _field([], "primary tasks (auxiliary-learning mode of auto_lambda, hydalearn); empty = all")


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing."""

    steps: int = _field(20000, "optimizer steps")
    batch_per_task: int = _field(32, "samples drawn from each task per step (task-balanced batches)")
    lr: float = _field(1e-3, "peak AdamW learning rate")
    weight_decay: float = _field(1e-4, "AdamW weight decay")
    warmup_steps: int = _field(500, "linear warm-up steps before the cosine decay")
    min_lr_ratio: float = _field(0.05, "final learning rate as a fraction of lr")
    grad_clip: float = _field(1.0, "max global gradient norm; 0 = off")
    log_every: int = _field(100, "steps between TensorBoard logs (the only host syncs)")
    checkpoint_every: int = _field(2000, "steps between checkpoints")
    keep_checkpoints: int = _field(2, "step checkpoints kept besides best.pt")
    eval_every: int = _field(0, "steps between rollout evaluations during training; 0 = none")
    eval_episodes: int = _field(10, "episodes per task for evaluations during training")
    device: str = _field("cpu", "torch device: cpu, cuda, cuda:1, ... or auto")
    seed: int = _field(0, "seed of initialisation and batch sampling")
    num_threads: int = _field(0, "torch CPU threads; 0 = torch's default")
    precision: str = _field("fp32", "fp32, or bf16: the step's forward and backward under torch.autocast with bfloat16 (for GPUs with bf16)")
    ema_decay: float = _field(0.0, "decay of an exponential moving average of the weights, which evaluation then uses; 0 = off")
    max_nonfinite_steps: int = _field(10, "a step with a NaN/inf loss or gradient is skipped; stop after this many in a row")


@dataclass
class AffinityConfig:
    """TAG's inter-task affinity probe during training (`rlmtl affinity`)."""

    probe_every: int = _field(0, "steps between affinity probes; 0 = off (rlmtl affinity turns it on, every 25 steps)")
    divide_by_lr: bool = _field(False, "report Z / lr as the official TAG code (default: the paper's Z)")
    max_groups: int = _field(3, "largest number of networks k for the grouping search")


@dataclass
class DiagnosticsConfig:
    """Measurements taken during training that do not change it (rlmtl/training/gradient_conflict.py)."""

    every: int = _field(
        100,
        "steps between gradient-conflict measurements (per-task gradient norms of the shared parameters, their K x K "
        "cosine matrix, the fraction of conflicting pairs), read at the next log step; 0 = off",
    )


@dataclass
class EvalConfig:
    """Headless rollouts of the trained policy."""

    episodes_per_task: int = _field(50, "evaluation episodes per task")
    workers: int = _field(0, "rollout processes; 0 = all cores")
    envs_per_worker: int = _field(
        16,
        "episodes each rollout process runs at once, with one policy call per step for all of them (capped at the backend's simulators per process: RLBench 1)",
    )
    seed: int = _field(0, "seed of the evaluation scenes (a split disjoint from the demos)")
    video: bool = _field(False, "write a video per task")
    video_episodes: int = _field(3, "episodes per task recorded when video is on (the first ones), back to back in the task's video")
    video_camera: str = _field("", "camera for videos; empty = the suite's default")
    video_size: int = _field(128, "video frame height and width in pixels")
    video_format: str = _field("gif", "gif or mp4 (mp4 needs imageio-ffmpeg)")
    episode_timeout_s: float = _field(
        300.0,
        "seconds a rollout process may go without progress (an episode starting or stepping) before it is killed and its episode rerun; 0 = no limit",
    )
    max_episode_retries: int = _field(2, "reruns (same scene seed) of an episode whose worker crashed or hung before it counts as an error")


@dataclass
class RunConfig:
    """A whole run: environment, data, agent, weighting, training and evaluation."""

    name: str = _field("", "run name; empty = <suite>-<weighting>-seed<seed>")
    out_dir: str = _field("runs", "parent folder of run folders")
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    affinity: AffinityConfig = field(default_factory=AffinityConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.env.suite}-{self.weighting.name}-seed{self.train.seed}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.run_name


# ----------------------------------------------------------------------------- parsing


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a RunConfig from a plain mapping; errors name `source` and the dotted key.
    `env.options` is built here (its type depends on `env.backend`); `weighting.params` is
    checked by `validate`, so reading a checkpoint's config needs no weighting plug-in."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    return _build_nested(RunConfig, data, source, "")


def _build_nested(cls: type, data: dict[str, Any], source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    flat: dict[str, Any] = {}  # env keys that are no EnvConfig field: maybe options in the old flat spelling
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if cls is EnvConfig and key == "options":
            continue  # built below, once the backend is known
        if key not in fields:
            if cls is EnvConfig:
                flat[key] = value
                continue
            known = ", ".join(f"{prefix}{name}" for name in sorted(fields))
            raise ConfigError(f"{source}: unknown key {dotted!r} (known: {known})")
        tp = hints[key]
        if _is_dataclass_type(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted!r} must be a mapping, got {value!r}")
            kwargs[key] = _build_nested(tp, value, source, f"{dotted}.")
        else:
            kwargs[key] = check_value(value, tp, f"{source}: {dotted!r}")
    if cls is EnvConfig:
        backend = kwargs.get("backend", fields["backend"].default)
        kwargs["options"] = env_options(backend, data.get("options"), flat, source, prefix, list(fields))
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain YAML/JSON-able data."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (["a","b","c"], value); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.steps=2000")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = safe_load_without_aliases(raw) if raw != "" else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({yaml_problem(error)})") from None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each dotted override set (validated later by the builder)."""
    merged = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return merged


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config file, composed with its `base` files (rlmtl/config_files.py), or the defaults
    when `path` is None, and apply overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data, chain = read_config_file(path)
        source = str(chain[0]) + (f" (base {', '.join(str(p) for p in chain[1:])})" if len(chain) > 1 else "")
    if overrides:
        data = apply_overrides(data, overrides)
        source = f"{source} + overrides"
    config = config_from_dict(data, source)
    validate(config, source)
    return config


def config_to_yaml(config: RunConfig) -> str:
    """The resolved config as YAML, as a run's config.yaml holds it (below its provenance comment)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def validate(config: RunConfig, source: str = "config") -> None:
    """Range checks that types alone cannot express, and `weighting.params` checked against the
    method's parameter class (its values converted to the declared types in place)."""
    positive = {
        "env.image_size": config.env.image_size,
        "data.demos_per_task": config.data.demos_per_task,
        "agent.hidden_dim": config.agent.hidden_dim,
        "train.steps": config.train.steps,
        "train.batch_per_task": config.train.batch_per_task,
        "train.log_every": config.train.log_every,
        "train.checkpoint_every": config.train.checkpoint_every,
        "train.max_nonfinite_steps": config.train.max_nonfinite_steps,
        "eval.episodes_per_task": config.eval.episodes_per_task,
        "eval.envs_per_worker": config.eval.envs_per_worker,
        "eval.video_size": config.eval.video_size,
    }
    for key, value in positive.items():
        if not value > 0:  # written so that NaN fails too
            raise ConfigError(f"{source}: {key!r} must be positive, got {value}")
    from rlmtl.agents.encoders import NORM_GROUPS

    odd = [c for c in config.agent.image_channels if not (c > 0 and c % NORM_GROUPS == 0)]
    if odd:
        raise ConfigError(f"{source}: 'agent.image_channels' must be positive multiples of {NORM_GROUPS} (GroupNorm groups), got {odd}")
    non_negative = {
        "env.max_episode_steps": config.env.max_episode_steps,
        "data.workers": config.data.workers,
        "data.val_demos": config.data.val_demos,
        "data.steps_after_success": config.data.steps_after_success,
        "train.warmup_steps": config.train.warmup_steps,
        "train.eval_every": config.train.eval_every,
        "train.grad_clip": config.train.grad_clip,
        "affinity.probe_every": config.affinity.probe_every,
        "diagnostics.every": config.diagnostics.every,
        "eval.workers": config.eval.workers,
        "data.attempt_timeout_s": config.data.attempt_timeout_s,
        "data.memory_budget_gb": config.data.memory_budget_gb,
        "data.max_attempt_retries": config.data.max_attempt_retries,
        "eval.episode_timeout_s": config.eval.episode_timeout_s,
        "eval.max_episode_retries": config.eval.max_episode_retries,
        "eval.video_episodes": config.eval.video_episodes,
        "agent.head_hidden_dim": config.agent.head_hidden_dim,
        "train.weight_decay": config.train.weight_decay,
    }
    for key, value in non_negative.items():
        if not value >= 0:
            raise ConfigError(f"{source}: {key!r} must be >= 0, got {value}")
    for task, count in config.data.train_demos.items():
        if isinstance(count, bool) or not isinstance(count, int) or not count >= 1:
            raise ConfigError(f"{source}: 'data.train_demos.{task}' must be a whole number of demos >= 1, got {count!r}")
    for key, (value, bound) in _upper_bounds(config).items():
        if value > bound:
            raise ConfigError(f"{source}: {key!r} must be <= {bound} (a larger value can exhaust memory), got {value}")
    if not config.train.lr > 0:
        raise ConfigError(f"{source}: 'train.lr' must be positive, got {config.train.lr}")
    if not config.data.max_attempts_per_demo >= 1:
        raise ConfigError(
            f"{source}: 'data.max_attempts_per_demo' must be >= 1 (attempts per requested demo), got {config.data.max_attempts_per_demo}"
        )
    if config.train.precision not in PRECISIONS:
        raise ConfigError(f"{source}: 'train.precision' must be one of {', '.join(PRECISIONS)}, got {config.train.precision!r}")
    if not 0 <= config.train.ema_decay < 1:
        raise ConfigError(f"{source}: 'train.ema_decay' must be in [0, 1) (0 = off), got {config.train.ema_decay}")
    if not 0 <= config.train.min_lr_ratio <= 1:
        raise ConfigError(f"{source}: 'train.min_lr_ratio' must be in [0, 1], got {config.train.min_lr_ratio}")
    name = config.name
    if name and (name in (".", "..") or "/" in name or "\\" in name or "\0" in name):
        raise ConfigError(f"{source}: 'name' must be a plain folder name inside out_dir (no path), got {name!r}")
    if not config.agent.obs_keys:
        raise ConfigError(f"{source}: 'agent.obs_keys' must name at least one observation key")
    if config.eval.video_format not in ("gif", "mp4"):
        raise ConfigError(f"{source}: 'eval.video_format' must be gif or mp4, got {config.eval.video_format!r}")
    for key in config.agent.obs_keys:
        if key.startswith("rgb_") and key[4:] not in config.env.cameras:
            raise ConfigError(f"{source}: 'agent.obs_keys' uses {key!r} but env.cameras does not list {key[4:]!r}")
    check_weighting_name(config.weighting.name, source)
    check_agent_name(config.agent.name, source)
    check_agent_parts(config.agent, source)
    config.agent.head_params = action_head_params(config.agent.head, config.agent.head_params, source, config.agent.head_hidden_dim)
    config.weighting.params = weighting_params(config.weighting.name, config.weighting.params, source, "weighting.params")


def _upper_bounds(config: RunConfig) -> dict[str, tuple[int, int]]:
    """(value, bound) of every size that allocates memory in proportion to it (listed in the README's reliability table)."""
    channels = max(config.agent.image_channels, default=0)
    return {
        "env.image_size": (config.env.image_size, 1024),
        "env.max_episode_steps": (config.env.max_episode_steps, 100_000),
        "data.demos_per_task": (config.data.demos_per_task, 100_000),
        "data.steps_after_success": (config.data.steps_after_success, 100_000),
        "data.workers": (config.data.workers, 1024),
        "agent.hidden_dim": (config.agent.hidden_dim, 16_384),
        "agent.num_layers": (config.agent.num_layers, 64),
        "agent.head_hidden_dim": (config.agent.head_hidden_dim, 16_384),
        "agent.image_channels": (channels, 4096),
        "train.batch_per_task": (config.train.batch_per_task, 65_536),
        "train.log_every": (config.train.log_every, 100_000),
        "eval.episodes_per_task": (config.eval.episodes_per_task, 100_000),
        "eval.workers": (config.eval.workers, 1024),
        "eval.envs_per_worker": (config.eval.envs_per_worker, 1024),
        "eval.video_size": (config.eval.video_size, 2048),
        "eval.video_episodes": (config.eval.video_episodes, 1000),
        "affinity.max_groups": (config.affinity.max_groups, 16),
    }


def dataset_fingerprint(config: RunConfig) -> str:
    """A short hash of every setting that changes what `collect` writes."""
    from rlmtl.envs.base import identifying_options
    relevant = {
        "backend": config.env.backend,
        "suite": config.env.suite,
        "tasks": config.env.tasks,
        "cameras": config.env.cameras,
        "image_size": config.env.image_size if config.env.cameras else None,
        "max_episode_steps": config.env.max_episode_steps,
        "demos_per_task": config.data.demos_per_task,
        "seed": config.data.seed,
    }
    if config.data.steps_after_success:  # only when set, so datasets cached before the key keep their names
        relevant["steps_after_success"] = config.data.steps_after_success
    # the backend's options as flat keys (none for a backend without options, so its cached
    # datasets keep the names they had before backends had options)
    options = config.env.options
    for name, value in (identifying_options(options) if options is not None else {}).items():
        relevant[f"options.{name}" if name in relevant else name] = value
    blob = json.dumps(relevant, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def dataset_path(config: RunConfig) -> Path:
    """The dataset file a run reads (and `collect` writes)."""
    if config.data.path:
        return Path(config.data.path)
    views = "-".join(config.env.cameras) if config.env.cameras else "state"
    name = f"{config.env.suite}-{views}-{config.data.demos_per_task}demos-seed{config.data.seed}-{dataset_fingerprint(config)}.h5"
    return Path(config.data.cache_dir) / name


def field_help(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf field, for `rlmtl config`."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = getattr(defaults, f.name)
        if _is_dataclass_type(tp):
            rows.extend(field_help(tp, f"{prefix}{f.name}."))
        elif dataclasses.is_dataclass(default):  # env.options: the default backend's, as a mapping
            rows.append((f"{prefix}{f.name}", repr(dataclasses.asdict(default)), f.metadata.get("help", "")))
        else:
            rows.append((f"{prefix}{f.name}", repr(default), f.metadata.get("help", "")))
    return rows
