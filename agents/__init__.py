"""Agents: observation encoders (registry), batched per-task heads, the multi-task BC agent."""

from agents.bc import MultiTaskBC
from agents.encoders import ENCODERS

__all__ = ["ENCODERS", "MultiTaskBC"]
