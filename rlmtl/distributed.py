"""Data parallelism under `torchrun`: which rank this is, and the few collectives training needs.

`torchrun --nproc-per-node=N -m rlmtl train CONFIG` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables; `Ranks.from_environment` joins the process group (NCCL for CUDA devices,
gloo for CPU). Without WORLD_SIZE (or with WORLD_SIZE=1) there is no process group and every
collective below is the identity, so a single process runs exactly the single-process code.

Design (see docs/architecture.md, "Distributed"): rlmtl does not wrap the agent in
DistributedDataParallel. DDP's hooks fire on every backward into `.grad`, while the weighting
methods take per-task gradients with `vmap(grad)`, virtual steps and functional calls; instead
`MultiTaskBackward` averages what a method reads (losses, task gradients, post-step losses) and
the final gradients with one flat all-reduce each, so every rank computes the same weights and
applies the same update.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, NoReturn, Sequence

import torch
import torch.distributed as dist

from rlmtl.errors import RlmtlError

_joined = False  # this process joined a process group (it is a torchrun rank): see `leave_process`


def join_process_group(backend: str, **options: Any) -> None:
    """`torch.distributed.init_process_group(backend, **options)`, remembering that this process did."""
    global _joined
    dist.init_process_group(backend, **options)
    _joined = True


def joined_a_process_group() -> bool:
    """True once this process has joined a process group (left or not)."""
    return _joined


def leave_process(code: int) -> NoReturn:
    """End a process that joined a process group: flush stdout and stderr, then `os._exit(code)`,
    without the interpreter's finalization.

    Why: a backend's C++ threads (gloo's workers) may still hold a tensor whose Python object they
    keep alive, and release it, which needs the GIL, while the interpreter finalizes. CPython up to
    3.13 ends such a thread with `pthread_exit`; unwinding it through a `noexcept` C++ frame calls
    `std::terminate` (CPython gh-87135). That aborted two-rank runs here now and then, after they had
    finished ("terminate called without an active exception", SIGABRT; the core showed the main
    thread in `Py_FinalizeEx` and another thread aborting). Everything rlmtl writes is closed and
    atomically in place before this point, so skipping finalization loses nothing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: `rank` of `world_size`, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes checkpoints and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @staticmethod
    def from_env_vars() -> "Ranks":
        """This process's place from torchrun's RANK, WORLD_SIZE and LOCAL_RANK (one process when
        unset), without joining a process group; RlmtlError when they are not consistent integers."""
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        try:
            rank, world_size, local_rank = (int(os.environ.get(name, default)) for name, default in zip(names, ("0", "1", "0")))
        except ValueError:
            shown = " ".join(f"{name}={os.environ.get(name)!r}" for name in names)
            raise RlmtlError(f"{shown}: torchrun's rank variables must be integers") from None
        if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
            raise RlmtlError(f"RANK={rank} must be in [0, WORLD_SIZE={world_size}) and LOCAL_RANK={local_rank} >= 0")
        return Ranks(rank, world_size, local_rank)

    @staticmethod
    def from_environment(device: torch.device) -> tuple["Ranks", torch.device]:
        """Join the torchrun process group if WORLD_SIZE > 1; returns (ranks, this rank's device).

        A CUDA device becomes `cuda:LOCAL_RANK` (one GPU per process) and uses NCCL; CPU uses gloo."""
        ranks = Ranks.from_env_vars()
        if not ranks.distributed:
            return Ranks(), device
        rank, world_size, local_rank = ranks.rank, ranks.world_size, ranks.local_rank
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise RlmtlError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPU(s): lower --nproc-per-node")
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            join_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise RlmtlError(
                f"process group has rank {dist.get_rank()} of {dist.get_world_size()}, environment says RANK={rank} WORLD_SIZE={world_size}"
            )
        return Ranks(rank, world_size, local_rank), device

    # ------------------------------------------------------------------ collectives
    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over ranks of a per-rank tensor (a new tensor; the input is untouched)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total.div_(self.world_size)

    def mean_in_place(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over ranks, with ONE all-reduce of a flat buffer."""
        if not self.distributed or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat.div_(self.world_size)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite every rank's tensors with rank 0's (one flat broadcast)."""
        if not self.distributed or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for t in tensors:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def differing(self, tensors: Sequence[torch.Tensor]) -> bool:
        """True on every rank if any rank's tensors differ from rank 0's (a host sync: log time only)."""
        if not self.distributed or not tensors:
            return False
        mine = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        # NaN != NaN: compare with NaN treated as equal to NaN
        same = (mine == reference) | (mine.isnan() & reference.isnan())
        flag = (~same).any().to(torch.float64).reshape(1)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any_true(self, value: bool, device: torch.device) -> bool:
        """True on every rank if `value` is True on any rank (a host sync)."""
        if not self.distributed:
            return value
        flag = torch.tensor([1.0 if value else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    @contextmanager
    def together(self, what: str, device: torch.device) -> Iterator[None]:
        """Run a block that may fail on some ranks only (rank 0's file writes, evaluation) so that
        no rank is left waiting in a collective: the failing rank re-raises its error, the others
        raise an RlmtlError naming the failed step."""
        try:
            yield
        except BaseException:
            self.any_true(True, device)
            raise
        if self.any_true(False, device):
            raise RlmtlError(f"{what} failed on another rank (see its error above)")


def shutdown() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
