"""Agents (registry), observation encoders (registry), batched per-task heads, the multi-task BC agent."""

from rlmtl.agents.base import AGENTS, MultiTaskAgent
from rlmtl.agents.bc import MultiTaskBC
from rlmtl.agents.encoders import ENCODERS

__all__ = ["AGENTS", "ENCODERS", "MultiTaskAgent", "MultiTaskBC"]
