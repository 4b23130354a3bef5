"""The multi-task behaviour-cloning agent: shared encoder, per-task heads, per-task normalisation.

Vector observations are z-scored with each task's dataset mean/std; actions are scaled to [-1, 1]
with each task's dataset min/max (a dimension that never varies keeps scale 1). What each task head
predicts, its loss and how its output becomes an env action is the action head's job
(`agent.head`, agents/action_heads.py: mse, gmm, chunk, keyframe, diffusion); every task's loss is the mean
of the head's loss terms over that task's samples.

The K losses of a batch (`task_losses`) take the direct path: the encoder once over every sample,
the heads as one batched matmul per layer. The loss is also written for ONE task (`task_loss(params,
inputs)`, a pure function of a parameter dict): mapped over the K tasks with `torch.func.vmap` it
gives the losses at other parameters (lookahead methods) and, under `vmap(grad(...))`, every
task's gradient of the shared parameters from its own batch only, at about the cost of one
ordinary backward pass (`per_task_gradients`), which is what the gradient weighting methods need.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from rlmtl.agents.action_heads import make_action_head, normalise_actions
from rlmtl.agents.augmentations import augment
from rlmtl.agents.base import AGENTS, Batch
from rlmtl.agents.encoders import ObservationEncoder
from rlmtl.agents.heads import TaskHeads, apply_head


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [.., H, W, 3] -> float in [0, 1]; float images (already augmented) pass through."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


@AGENTS.register("bc")
class MultiTaskBC(nn.Module):
    """Shared `ObservationEncoder` + `TaskHeads`; implements `MultiTaskAgent` (agents/base.py).

    Args:
        obs_shapes: observation key -> per-step shape, for the keys the agent reads.
        action_dim: A.
        num_tasks: K.
        image_size: H = W of camera keys (`rgb_<camera>`).
        options: the agent section of the config (encoder names, widths, conditioning).
    """

    def __init__(self, obs_shapes: dict[str, tuple[int, ...]], action_dim: int, num_tasks: int, image_size: int, options: Any) -> None:
        super().__init__()
        self.obs_keys = list(obs_shapes)
        self.vector_keys = [k for k in self.obs_keys if not k.startswith("rgb_")]
        self.image_keys = [k for k in self.obs_keys if k.startswith("rgb_")]
        self.num_tasks = num_tasks
        self.action_dim = action_dim
        self.image_augment = bool(getattr(options, "image_augment", True))
        self.augmentations = list(getattr(options, "augmentations", ["shift"]))
        vector_dim = sum(int(np.prod(obs_shapes[k])) for k in self.vector_keys)
        self.encoder = ObservationEncoder(
            vector_dim=vector_dim,
            cameras=self.image_keys,
            image_size=image_size,
            num_tasks=num_tasks,
            task_conditioning=options.task_conditioning,
            lowdim_encoder=options.lowdim_encoder,
            image_encoder=options.image_encoder,
            hidden_dim=options.hidden_dim,
            num_layers=options.num_layers,
            image_channels=options.image_channels,
            share_image_encoder=bool(getattr(options, "share_image_encoder", False)),
        )
        self.action_head = make_action_head(getattr(options, "head", "mse"), dict(getattr(options, "head_params", {})), action_dim)
        self.action_horizon = self.action_head.horizon
        self.ensemble_decay = float(getattr(self.action_head, "ensemble_decay", 0.0))  # of a chunk head's temporal ensemble
        head_inputs = self.encoder.out_dim + self.action_head.condition_dim(action_dim)  # a denoiser also sees its noisy action
        self.heads = TaskHeads(num_tasks, head_inputs, self.action_head.output_dim(action_dim), options.head_hidden_dim)
        self.register_buffer("obs_mean", torch.zeros(num_tasks, vector_dim))
        self.register_buffer("obs_std", torch.ones(num_tasks, vector_dim))
        self.register_buffer("action_center", torch.zeros(num_tasks, action_dim))
        self.register_buffer("action_scale", torch.ones(num_tasks, action_dim))
        self.register_buffer("task_onehot", torch.eye(num_tasks), persistent=False)

    # ------------------------------------------------------------------ statistics
    def set_statistics(self, per_task_stats: list[dict[str, dict[str, np.ndarray]]]) -> None:
        """Load normalisation from the dataset's per-task statistics (one dict per task)."""
        if self.vector_keys:
            mean = np.stack([np.concatenate([s[k]["mean"].reshape(-1) for k in self.vector_keys]) for s in per_task_stats])
            std = np.stack([np.concatenate([s[k]["std"].reshape(-1) for k in self.vector_keys]) for s in per_task_stats])
            self.obs_mean.copy_(torch.as_tensor(mean))
            self.obs_std.copy_(torch.as_tensor(np.where(std < 1e-6, 1.0, std)))
        low = np.stack([s["actions"]["min"] for s in per_task_stats])
        high = np.stack([s["actions"]["max"] for s in per_task_stats])
        half_range = (high - low) / 2
        self.action_center.copy_(torch.as_tensor((high + low) / 2))
        self.action_scale.copy_(torch.as_tensor(np.where(half_range < 1e-6, 1.0, half_range)))

    # ------------------------------------------------------------------ one task, functionally
    def _features(
        self, params: dict[str, torch.Tensor] | None, observations: dict[str, torch.Tensor], task: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Encoder features [*lead, F] of observations {key: [*lead, ...]}: [N] samples of one task
        or of mixed tasks, or [K, B] samples of K tasks; `task` entries broadcast to [*lead, D]
        (their leading dims give the rank of `lead`). `params` holds the encoder's parameters by
        name (None: the module's own, called directly)."""
        lead = next(iter(observations.values())).shape[: task["onehot"].dim() - 1]
        n = lead.numel()
        vector = None
        if self.vector_keys:
            parts = [observations[k].reshape(*lead, -1).float() for k in self.vector_keys]
            raw = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
            vector = ((raw - task["obs_mean"]) / task["obs_std"]).reshape(n, -1)
        images = {
            key: _to_unit_float(observations[key].reshape(n, *observations[key].shape[len(lead) :])).permute(0, 3, 1, 2)
            for key in self.image_keys
        }
        onehot = task["onehot"].expand(*lead, -1).reshape(n, -1)
        args = (vector, images, onehot)
        features = self.encoder(*args) if params is None else functional_call(self.encoder, params, args)
        return features.reshape(*lead, -1)

    def _head_loss_terms(self, raw: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """The action head's element-wise loss terms of head outputs `raw` [*lead, O]."""
        task = inputs["task"]
        valid, extras = inputs.get("action_valid"), inputs.get("head_extras")
        return self.action_head.loss(raw, inputs["actions"], valid, task["action_center"], task["action_scale"], extras)

    def _head_input(self, features: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """The task heads' training input: the features, plus what the action head conditions on."""
        return self.action_head.head_input(features, inputs.get("head_extras"))

    def task_loss(self, params: dict[str, torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
        """The loss of ONE task: `params` = {"encoder": {...}, "heads": ([W_l], [b_l]) for this
        task}, `inputs` = this task's row of `task_inputs(batch)`. A scalar."""
        features = self._features(params["encoder"], inputs["obs"], inputs["task"])
        raw = apply_head(params["heads"][0], params["heads"][1], self._head_input(features, inputs))
        return self._head_loss_terms(raw, inputs).mean()

    def task_inputs(self, batch: Batch) -> dict[str, Any]:
        """A [K, B, ...] batch as per-task inputs (images augmented when training); a chunk head's
        batch also has "action_valid" [K, B, H] (which of the H targets lie inside the demo), and a
        head that draws inputs per batch (the diffusion head's noise) has them in "head_extras"."""
        observations = {}
        for key in self.obs_keys:
            value = batch["obs"][key]
            if key in self.image_keys and self.training and self.image_augment:
                k, b = value.shape[:2]
                image = _to_unit_float(value.reshape(k * b, *value.shape[2:])).permute(0, 3, 1, 2)
                value = augment(image, self.augmentations).permute(0, 2, 3, 1).reshape(k, b, *value.shape[2:])
            observations[key] = value
        task = {
            "obs_mean": self.obs_mean[:, None],
            "obs_std": self.obs_std[:, None],
            "action_center": self.action_center[:, None],
            "action_scale": self.action_scale[:, None],
            "onehot": self.task_onehot[:, None],
        }
        inputs = {"obs": observations, "actions": batch["actions"], "task": task}
        if "action_valid" in batch:
            inputs["action_valid"] = batch["action_valid"]
        extras = self.action_head.training_inputs(batch["actions"], batch.get("action_valid"), task["action_center"], task["action_scale"])
        if extras:
            inputs["head_extras"] = extras
        return inputs

    def parameter_tree(self, detach: bool = False) -> dict[str, Any]:
        """{"encoder": {name: tensor}, "heads": ([W_l], [b_l]) stacked over tasks}."""
        encoder = {name: (p.detach() if detach else p) for name, p in self.encoder.named_parameters()}
        heads = tuple([p.detach() if detach else p for p in group] for group in (self.heads.weights, self.heads.biases))
        return {"encoder": encoder, "heads": heads}

    _TREE_DIMS = {"encoder": None, "heads": 0}

    # ------------------------------------------------------------------ all tasks
    def task_losses(self, batch: Batch, params: dict[str, Any] | None = None) -> torch.Tensor:
        """batch {"obs": {key: [K, B, ...]}, "actions": [K, B, A] ([K, B, H, A] and "action_valid"
        [K, B, H] for a chunk head)} -> the loss of each task [K].

        The module's own parameters take the direct path: the encoder once over all K x B samples
        and the heads as one batched matmul per layer, the plain loop's cost. `params` (a
        `parameter_tree`) evaluates the same losses at other parameters, e.g. a lookahead step,
        without touching the module (`task_loss` mapped over tasks with `vmap`)."""
        inputs = self.task_inputs(batch)
        if params is not None:
            return vmap(self.task_loss, in_dims=(self._TREE_DIMS, 0))(params, inputs)
        features = self._features(None, inputs["obs"], inputs["task"])
        terms = self._head_loss_terms(self.heads.forward_all(self._head_input(features, inputs)), inputs)
        return terms.mean(dim=tuple(range(1, terms.dim())))

    def forward(self, batch: Batch) -> torch.Tensor:
        """The K losses as `functional_call(agent, params, (batch,))` evaluates them at other
        parameters (lookahead methods): the vmapped per-task form, so those methods see the losses
        they saw before `task_losses` gained its direct path."""
        return self.task_losses(batch, self.parameter_tree())

    def per_task_gradients(self, batch: Batch, params: dict[str, Any] | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Every task's loss and gradient, each from its own batch, in one vmapped backward.

        Returns (losses [K], grads) where grads has the structure of `parameter_tree`: encoder
        entries are [K, *shape] (task k's gradient of the shared parameter) and head entries are
        [K, ...] (task k's gradient of its own head; other tasks' heads get none from it)."""
        tree = self.parameter_tree(detach=True) if params is None else params
        grads, losses = vmap(grad_and_value(self.task_loss), in_dims=(self._TREE_DIMS, 0), randomness="different")(
            tree, self.task_inputs(batch)
        )
        return losses, grads

    def shared_task_gradients(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`per_task_gradients`' encoder part by parameter name: (losses [K], {"encoder.<name>": [K, *shape]})."""
        losses, grads = self.per_task_gradients(batch)
        return losses, {f"encoder.{name}": grad for name, grad in grads["encoder"].items()}

    def gradient_rows(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """`per_task_gradients` in the weighting engine's layout: (losses [K], the encoder's
        gradients as one [K, P] matrix, the heads' [K, ...] gradients as a list)."""
        losses, grads = self.per_task_gradients(batch)
        shared = torch.cat([g.reshape(self.num_tasks, -1) for g in grads["encoder"].values()], dim=1)
        return losses, shared, [*grads["heads"][0], *grads["heads"][1]]

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """[K, B, A] env actions -> [-1, 1] per task."""
        return normalise_actions(actions, self.action_center[:, None], self.action_scale[:, None])

    # ------------------------------------------------------------------ rollouts
    @torch.inference_mode()
    def act_batch(self, observations: dict[str, torch.Tensor], task_ids: torch.Tensor) -> torch.Tensor:
        """observations {key: [N, ...]}, task_ids [N] -> env actions [N, A] (mixed tasks allowed);
        [N, H, A] for a chunk head (`action_horizon` H > 1: the evaluator ensembles them)."""
        # index_select, not advanced indexing (obs_mean[task_ids]): the same rows, a fraction of
        # the per-call overhead on a CPU, where an evaluation policy call is a few small kernels
        task = {
            "obs_mean": self.obs_mean.index_select(0, task_ids),
            "obs_std": self.obs_std.index_select(0, task_ids),
            "onehot": self.task_onehot.index_select(0, task_ids),
        }
        features = self._features(None, observations, task)
        center, scale = self.action_center.index_select(0, task_ids), self.action_scale.index_select(0, task_ids)
        return self.action_head.decode(self.heads.selected(task_ids, features), center, scale)

    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], task: int) -> np.ndarray:
        """One env step: numpy observation of task index `task` -> numpy action [A] (a chunk head's
        first action: ensembling needs the episode's earlier chunks, which the evaluator keeps)."""
        device = self.obs_mean.device
        batch = {k: torch.as_tensor(np.asarray(observation[k])[None], device=device) for k in self.obs_keys}
        action = self.act_batch(batch, torch.tensor([task], device=device))[0]
        return (action[0] if self.action_horizon > 1 else action).cpu().numpy()

    # ------------------------------------------------------------------ parameter groups
    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on (the encoder)."""
        return list(self.encoder.parameters())

    def task_specific_parameters(self) -> list[nn.Parameter]:
        """Parameters of the per-task heads (stacked over tasks)."""
        return list(self.heads.parameters())
