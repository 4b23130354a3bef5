"""Agents (registry), observation encoders, augmentations and action heads (registries), batched per-task heads, the multi-task BC agent."""

from rlmtl.agents import image_encoders  # noqa: F401  (registers cnn_spatial and resnet18)
from rlmtl.agents.action_heads import ACTION_HEADS
from rlmtl.agents.augmentations import AUGMENTATIONS
from rlmtl.agents.base import AGENTS, MultiTaskAgent
from rlmtl.agents.bc import MultiTaskBC
from rlmtl.agents.encoders import ENCODERS

__all__ = ["ACTION_HEADS", "AGENTS", "AUGMENTATIONS", "ENCODERS", "MultiTaskAgent", "MultiTaskBC"]
