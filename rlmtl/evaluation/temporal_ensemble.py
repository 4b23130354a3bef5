"""ACT's temporal ensembling: the executed action of an action-chunking policy (Zhao et al., RSS 2023).

The policy predicts a chunk of the next H actions at every step. The action executed at step t is
the weighted mean of every prediction made for step t (by the chunks of steps t-H+1 .. t), with
weight exp(-k i), i = 0 for the oldest (tonyzhaozh/act imitate_episodes.py:248-259, 742c753;
k = 0.01 there). One `TemporalEnsemble` serves one episode.
"""

from __future__ import annotations

import collections

import numpy as np


class TemporalEnsemble:
    """The executed actions [A] of one episode from the chunks [H, A] predicted at its steps."""

    def __init__(self, horizon: int, decay: float) -> None:
        self.horizon = horizon
        self.decay = decay
        self.step = 0
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (step predicted, chunk)

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """The chunk [H, A] predicted at the current step -> the action [A] to execute now."""
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[0] != self.horizon:
            raise ValueError(f"expected a chunk of {self.horizon} actions, got shape {chunk.shape}")
        self._chunks.append((self.step, chunk))
        while self._chunks[0][0] + self.horizon <= self.step:
            self._chunks.popleft()
        predictions = np.stack([c[self.step - start] for start, c in self._chunks])  # oldest first
        weights = np.exp(-self.decay * np.arange(len(predictions)))
        self.step += 1
        return (weights / weights.sum()) @ predictions
