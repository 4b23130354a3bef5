"""What each task head predicts and how it is trained: the action heads, registered by name (`agent.head`).

Every task head is the same batched MLP (agents/heads.py); the action head decides its output width,
its loss and how its output becomes an env action. All of it is pure tensor code, so the per-task
`vmap(grad(...))` path of the gradient weighting methods runs through it unchanged.

An `ActionHead` works in each task's normalised action space (env action -> [-1, 1] with the task's
dataset center and half-range, `normalise_actions`) and is given, per sample:
- `raw` [*lead, output_dim]: the task head's output;
- `actions` [*lead, A] (or [*lead, H, A] when `horizon` > 1): the env actions of the demo;
- `valid` [*lead, H] (only when `horizon` > 1): which of the H targets lie inside the demo;
- `center`, `scale` [*lead, A]: the task's action normalisation.
`loss` returns element-wise terms [*lead, ...]; the agent averages them over everything but the
task dimension, so each task's loss is one number. `actions` decodes `raw` into env actions
[*lead, A] (or [*lead, H, A]); `decode` is what evaluation calls (one head call, or several for a
denoiser). A head that conditions its task head on more than the features (a denoiser's noisy
action and step) declares `condition_dim` and draws those inputs in `training_inputs`.

Heads (each documents the source of its defaults and its deviations):
- `mse`: tanh-squashed regression, mean squared error (rlmtl's original head).
- `gmm`: robomimic's BC-GMM (Mandlekar et al., 2021).
- `chunk`: ACT's action chunking with temporal ensembling (Zhao et al., RSS 2023).
- `keyframe`: the next gripper pose of keyframe suites, rotation as discretised Euler angles (C2F-ARM,
  PerAct, RVT).
- `diffusion`: Diffusion Policy's DDPM-trained denoiser, sampled with DDIM (agents/diffusion_head.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rlmtl.agents.rotation_bins import DEFAULT_RESOLUTION_DEG, bins_per_angle
from rlmtl.registry import Registry

# the suite's action kinds a head may require (envs/base.py Suite.action_kind)
CONTINUOUS = "continuous"
KEYFRAME_POSE = "keyframe_pose"


def normalise_actions(actions: torch.Tensor, center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Env actions -> [-1, 1] with a task's dataset center and half-range (clamped)."""
    return ((actions - center) / scale).clamp(-1.0, 1.0)


class ActionHead:
    """Base of the action heads: one env action per prediction (`horizon` 1), any suite."""

    horizon: int = 1  # actions predicted per step (a chunk head's H)
    requires_action_kind: str | None = None  # the suite's action kind it needs (None: any)
    requires_hidden_layer: bool = False  # True: a linear task head cannot serve (agent.head_hidden_dim must be > 0)

    def output_dim(self, action_dim: int) -> int:
        raise NotImplementedError

    def condition_dim(self, action_dim: int) -> int:
        """Input width the task head takes besides the encoder's features (0: features only)."""
        return 0

    def training_inputs(
        self, actions: torch.Tensor, valid: torch.Tensor | None, center: torch.Tensor, scale: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-sample tensors [*lead, ...] a head draws once per batch, outside `vmap` (a denoiser's
        noise and diffusion step); given `actions` [*lead, A] or [*lead, H, A] and the normalisation
        [*lead, A]. Passed back as `extras` to `head_input` and `loss`. None by default."""
        return {}

    def head_input(self, features: torch.Tensor, extras: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """The task head's input during training: features [*lead, F] -> [*lead, F + condition_dim]."""
        return features

    def loss(
        self, raw: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor | None, center: torch.Tensor, scale: torch.Tensor, extras=None
    ) -> torch.Tensor:
        """Element-wise loss terms [*lead, ...] (see the module docstring); `extras`: `training_inputs`."""
        raise NotImplementedError

    def actions(self, raw: torch.Tensor, center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """raw [*lead, output_dim] -> env actions [*lead, A] ([*lead, H, A] for horizon > 1)."""
        raise NotImplementedError

    def decode(self, run_head: Callable[[torch.Tensor | None], torch.Tensor], center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Env actions at evaluation of N rows (center, scale [N, A]); `run_head(rest)` runs each
        row's task head on its encoder features and `rest` [N, condition_dim] (None: features
        only). One head call by default; a denoiser calls it per sampling step."""
        return self.actions(run_head(None), center, scale)


class HeadParamError(ValueError):
    """A head parameter out of its range: `key` names it."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(f"{key}: {text}")
        self.key, self.text = key, text


@dataclass(frozen=True)
class NoHeadParams:
    """A head without parameters."""


ACTION_HEADS: Registry[type[ActionHead]] = Registry("action head")


@ACTION_HEADS.register("mse")
class MSEHead(ActionHead):
    """tanh(raw) regresses the normalised action with the mean squared error."""

    Params = NoHeadParams

    def __init__(self, params: NoHeadParams, action_dim: int) -> None:
        self.action_dim = action_dim

    def output_dim(self, action_dim: int) -> int:
        return action_dim

    def loss(self, raw, actions, valid, center, scale, extras=None):
        return (torch.tanh(raw) - normalise_actions(actions, center, scale)).pow(2)

    def actions(self, raw, center, scale):
        return torch.tanh(raw) * scale + center


@dataclass(frozen=True)
class GMMParams:
    """robomimic's BC-GMM defaults (robomimic/config/bc_config.py:53-55, d309eae): 5 modes, a minimum
    std of 1e-4 added to softplus of the std output."""

    modes: int = 5
    min_std: float = 1e-4

    def check(self) -> None:
        if not (isinstance(self.modes, int) and 1 <= self.modes <= 64):
            raise HeadParamError("modes", f"must be a whole number in [1, 64], got {self.modes!r}")
        if not (math.isfinite(self.min_std) and self.min_std > 0):
            raise HeadParamError("min_std", f"must be positive and finite, got {self.min_std!r}")


@ACTION_HEADS.register("gmm")
class GMMHead(ActionHead):
    """A mixture of `modes` diagonal Gaussians over the normalised action, trained by negative
    log-likelihood: robomimic's `GMMActorNetwork` (robomimic/models/policy_nets.py:494-541, d309eae):
    means squashed with tanh, std = softplus(output) + min_std, mixture weights from logits.

    Deviation: at evaluation robomimic samples a mode and adds noise of std 1e-4 (`low_noise_eval`);
    rlmtl takes the mean of the most probable mode, so an episode's actions depend on its scene seed
    alone (resumable, reproducible evaluation). The difference is the mode choice, not the noise.
    """

    Params = GMMParams

    def __init__(self, params: GMMParams, action_dim: int) -> None:
        self.modes, self.min_std, self.action_dim = params.modes, params.min_std, action_dim

    def output_dim(self, action_dim: int) -> int:
        return self.modes * (2 * action_dim + 1)

    def _split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, a = self.modes, self.action_dim
        lead = raw.shape[:-1]
        means = torch.tanh(raw[..., : m * a]).reshape(*lead, m, a)
        stds = F.softplus(raw[..., m * a : 2 * m * a]).reshape(*lead, m, a) + self.min_std
        return means, stds, raw[..., 2 * m * a :]

    def loss(self, raw, actions, valid, center, scale, extras=None):
        means, stds, logits = self._split(raw)
        target = normalise_actions(actions, center, scale).unsqueeze(-2)  # [*lead, 1, A]
        z = (target - means) / stds
        component = (-0.5 * z.pow(2) - torch.log(stds) - 0.5 * math.log(2 * math.pi)).sum(-1)  # [*lead, M]
        return -torch.logsumexp(torch.log_softmax(logits, dim=-1) + component, dim=-1)

    def actions(self, raw, center, scale):
        means, _, logits = self._split(raw)
        best = logits.argmax(dim=-1, keepdim=True)[..., None].expand(*means.shape[:-2], 1, self.action_dim)
        return means.gather(-2, best).squeeze(-2) * scale + center


@dataclass(frozen=True)
class ChunkParams:
    """ACT's action chunking (Zhao et al., RSS 2023; tonyzhaozh/act 742c753). `horizon`: actions
    predicted per step (ACT's `chunk_size`, 100 at ALOHA's 50 Hz; rlmtl defaults to 10, see the
    README's agent table); `ensemble_decay`: k of the temporal ensemble's weights exp(-k i), i = 0 for
    the oldest prediction of the current step (imitate_episodes.py:255-257: k = 0.01)."""

    horizon: int = 10
    ensemble_decay: float = 0.01

    def check(self) -> None:
        if not (isinstance(self.horizon, int) and 2 <= self.horizon <= 1000):
            raise HeadParamError("horizon", f"must be a whole number in [2, 1000], got {self.horizon!r}")
        if not (math.isfinite(self.ensemble_decay) and self.ensemble_decay >= 0):
            raise HeadParamError("ensemble_decay", f"must be >= 0 and finite, got {self.ensemble_decay!r}")


@ACTION_HEADS.register("chunk")
class ChunkHead(ActionHead):
    """The next `horizon` actions from one observation, tanh-squashed, trained with ACT's L1 loss
    over the targets inside the demo (act/policy.py:30-31: padded steps count as zeros in the mean).
    Executed with ACT's temporal ensembling: a new chunk every step, the current step's action the
    exp(-k i)-weighted mean of every chunk that covers it (rlmtl/evaluation/temporal_ensemble.py).

    Deviation: ACT is a CVAE transformer with a KL term; here the chunk comes from the task's MLP head
    over the shared encoder's features (no latent), so only its L1 term applies."""

    Params = ChunkParams

    def __init__(self, params: ChunkParams, action_dim: int) -> None:
        self.horizon, self.ensemble_decay, self.action_dim = params.horizon, params.ensemble_decay, action_dim

    def output_dim(self, action_dim: int) -> int:
        return self.horizon * action_dim

    def _chunk(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.tanh(raw).reshape(*raw.shape[:-1], self.horizon, self.action_dim)

    def loss(self, raw, actions, valid, center, scale, extras=None):
        target = normalise_actions(actions, center.unsqueeze(-2), scale.unsqueeze(-2))
        return (self._chunk(raw) - target).abs() * valid.unsqueeze(-1).to(raw.dtype)

    def actions(self, raw, center, scale):
        return self._chunk(raw) * scale.unsqueeze(-2) + center.unsqueeze(-2)


@dataclass(frozen=True)
class KeyframeParams:
    """`rotation_resolution`: degrees per Euler-angle bin (5 in PerAct, conf/method/PERACT_BC.yaml:42)."""

    rotation_resolution: float = DEFAULT_RESOLUTION_DEG

    def check(self) -> None:
        try:
            bins_per_angle(self.rotation_resolution)
        except ValueError:
            raise HeadParamError("rotation_resolution", f"must divide 360 degrees into whole bins, got {self.rotation_resolution!r}") from None


@ACTION_HEADS.register("keyframe")
class KeyframeHead(ActionHead):
    """The next keyframe `[x, y, z, qx, qy, qz, qw, gripper_open]` (envs/rlbench_actions.py) as
    C2F-ARM, PerAct and RVT predict it: the rotation as three classifications over Euler-angle bins
    (agents/rotation_bins.py: PerAct's convention, canonical qw >= 0), the gripper state as a
    two-class classification, each with cross-entropy; the loss is their sum plus the translation's
    mean squared error, as PerAct sums its terms.

    Deviations: the translation is regressed (tanh, normalised with the task's dataset range) rather
    than classified over voxels. There is no ignore-collisions output: stepjam/RLBench takes collision
    checking as a constructor flag of `EndEffectorPoseViaPlanning`
    (rlbench/action_modes/arm_action_modes.py:194, 02720bb), not as a per-action value, so the 8-d
    action has no place for it (PerAct's RLBench fork adds a 9th)."""

    Params = KeyframeParams
    requires_action_kind = KEYFRAME_POSE

    def __init__(self, params: KeyframeParams, action_dim: int) -> None:
        if action_dim != 8:
            raise ValueError(f"the keyframe head predicts 8-d actions [x, y, z, qx, qy, qz, qw, open], not {action_dim}-d")
        self.resolution = float(params.rotation_resolution)
        self.bins = bins_per_angle(self.resolution)

    def output_dim(self, action_dim: int) -> int:
        return 3 + 3 * self.bins + 2

    def loss(self, raw, actions, valid, center, scale, extras=None):
        translation = (torch.tanh(raw[..., :3]) - normalise_actions(actions[..., :3], center[..., :3], scale[..., :3])).pow(2).mean(-1)
        rotation_logits = raw[..., 3 : 3 + 3 * self.bins].reshape(*raw.shape[:-1], 3, self.bins)
        rotation = _cross_entropy(rotation_logits, quaternion_to_bins(actions[..., 3:7], self.resolution)).sum(-1)
        gripper = _cross_entropy(raw[..., -2:], (actions[..., 7] > 0.5).long())
        return translation + rotation + gripper

    def actions(self, raw, center, scale):
        translation = torch.tanh(raw[..., :3]) * scale[..., :3] + center[..., :3]
        bins = raw[..., 3 : 3 + 3 * self.bins].reshape(*raw.shape[:-1], 3, self.bins).argmax(-1)
        quaternion = bins_to_quaternion(bins, self.resolution)
        gripper = raw[..., -2:].argmax(-1, keepdim=True).to(raw.dtype)
        return torch.cat([translation, quaternion.to(raw.dtype), gripper], dim=-1)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row: logits [..., C], labels [...] (long) -> [...] (a gather: runs under vmap, no host sync)."""
    return -torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def quaternion_to_bins(quaternions: torch.Tensor, resolution: float = DEFAULT_RESOLUTION_DEG) -> torch.Tensor:
    """[..., 4] xyzw quaternions -> [..., 3] Euler-angle bins (long): agents/rotation_bins.py's rule
    (scipy's extrinsic "xyz" angles of the canonical quaternion), in torch, on the tensor's device."""
    q = quaternions / quaternions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z, w = q.unbind(-1)
    # rotation matrix entries of R = Rz(c) Ry(b) Rx(a), the extrinsic xyz sequence
    r00, r10 = 1 - 2 * (y * y + z * z), 2 * (x * y + z * w)
    r20, r21, r22 = 2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)
    angles = torch.stack([torch.atan2(r21, r22), torch.asin((-r20).clamp(-1.0, 1.0)), torch.atan2(r10, r00)], dim=-1)
    count = bins_per_angle(resolution)
    bins = torch.round((torch.rad2deg(angles) + 180.0) / resolution).long()
    return torch.remainder(bins, count)


def bins_to_quaternion(bins: torch.Tensor, resolution: float = DEFAULT_RESOLUTION_DEG) -> torch.Tensor:
    """[..., 3] Euler-angle bins -> [..., 4] canonical xyzw quaternions (qw >= 0), in torch."""
    half = torch.deg2rad(bins.to(torch.float64) * resolution - 180.0) / 2
    cos, sin = torch.cos(half), torch.sin(half)
    zero = torch.zeros_like(half[..., 0])
    qx = torch.stack([sin[..., 0], zero, zero, cos[..., 0]], dim=-1)
    qy = torch.stack([zero, sin[..., 1], zero, cos[..., 1]], dim=-1)
    qz = torch.stack([zero, zero, sin[..., 2], cos[..., 2]], dim=-1)
    q = _quaternion_product(qz, _quaternion_product(qy, qx))  # extrinsic x, then y, then z
    return torch.where(q[..., 3:4] < 0, -q, q)


def _quaternion_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of xyzw quaternions [..., 4]."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def head_params_class(name: str) -> type:
    """The parameter dataclass of action head `name` (KeyError naming the registered ones)."""
    return ACTION_HEADS.get(name).Params  # type: ignore[attr-defined]


def make_action_head(name: str, params: dict[str, Any], action_dim: int) -> ActionHead:
    """Action head `name` with `params` (a mapping of its parameter dataclass's fields), for `action_dim`-d actions."""
    cls: Callable[..., ActionHead] = ACTION_HEADS.get(name)
    fields = head_params_class(name)(**params)
    if hasattr(fields, "check"):
        fields.check()
    return cls(fields, action_dim)


def head_param_names(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(head_params_class(name))]
