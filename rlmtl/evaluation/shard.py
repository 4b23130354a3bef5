"""Sharded evaluation: split (task, episode) jobs across ranks, gather through the episode logs.

Under `torchrun --nproc-per-node=N -m rlmtl eval RUN --out SHARED_FOLDER` every rank reads its
place with `Ranks.from_env_vars` (rlmtl/distributed.py), runs its share of the jobs with its own worker pool and appends them to
its own log (`eval_episodes.rank<R>.jsonl`). Then all ranks meet at one gloo barrier and rank 0
reads every log and writes the one `eval.json`; nothing is pickled between ranks. The output
folder must be shared by all ranks (one machine, or a network file system).
"""

from __future__ import annotations

import datetime
from contextlib import contextmanager
from typing import Iterator, Sequence, TypeVar

from rlmtl.distributed import join_process_group

T = TypeVar("T")

# ranks wait at the barrier for the slowest one; an evaluation can take hours
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


def shard(items: Sequence[T], rank: int, world_size: int, pinned: Sequence[bool] | None = None) -> list[T]:
    """This rank's items: the pinned ones all go to rank 0 (e.g. video episodes, so one rank
    writes every video), the others round-robin over the ranks."""
    pinned = pinned or [False] * len(items)
    free = [item for item, pin in zip(items, pinned) if not pin]
    mine = free[rank::world_size]
    if rank == 0:
        mine = [item for item, pin in zip(items, pinned) if pin] + mine
    return mine


@contextmanager
def rank_group(world_size: int) -> Iterator[None]:
    """The gloo process group the ranks meet in (over torchrun's MASTER_ADDR/PORT), joined once for
    the whole evaluation and left at its end; nothing for one rank or a group that already exists."""
    import torch.distributed as dist

    created = world_size > 1 and not dist.is_initialized()
    if created:
        join_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def barrier(world_size: int) -> None:
    """Wait until every rank gets here (inside `rank_group`); no-op for one rank."""
    if world_size <= 1:
        return
    import torch.distributed as dist

    dist.barrier()
