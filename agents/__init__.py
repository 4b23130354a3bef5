"""Agents (registry), observation encoders, augmentations and action heads (registries), batched per-task heads, the multi-task BC agent."""

from rlmtl.agents import diffusion_head, image_encoders  # noqa: F401  (register the diffusion head, cnn_spatial and resnet18)
from rlmtl.agents.action_heads import ACTION_HEADS
from rlmtl.agents.augmentations import AUGMENTATIONS
from rlmtl.agents.base import AGENTS, MultiTaskAgent
from rlmtl.agents.bc import MultiTaskBC
from rlmtl.agents.encoders import ENCODERS

__all__ = ["ACTION_HEADS", "AGENTS", "AUGMENTATIONS", "ENCODERS", "MultiTaskAgent", "MultiTaskBC"]
