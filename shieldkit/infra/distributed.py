"""torch.distributed plumbing: process group from ``torchrun``'s environment, shards, gathers, DDP.

shieldkit runs on PyTorch's own distributed engine. ``torchrun`` starts one
process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; :func:`init_from_env` joins the group (``nccl`` when CUDA is
available, ``gloo`` otherwise). Everything else here is a no-op in a single
process, so callers use it unconditionally:

- evaluation shards its fixed chunks of samples across ranks and gathers the
  rows on rank 0 (:mod:`shieldkit.evaluation.sharded`);
- the trainers wrap their network in :class:`~torch.nn.parallel.DistributedDataParallel`
  and draw each epoch's samples with a :class:`~torch.utils.data.distributed.DistributedSampler`
  (:func:`training_network`, :func:`epoch_order`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_local = threading.local()


def available() -> bool:
    return dist.is_available()


def initialized() -> bool:
    """Whether a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0, or a process working alone: the one that writes shared outputs."""
    return not active() or rank() == 0


def active() -> bool:
    """More than one process takes part (and :func:`local` is not in force)."""
    return world_size() > 1 and not getattr(_local, "suppressed", False)


def backend() -> str:
    """``nccl`` when CUDA is available, ``gloo`` otherwise."""
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init_from_env(timeout_s: float = 1800.0) -> bool:
    """Join the process group that ``torchrun`` describes in the environment; ``True`` if distributed.

    Does nothing (and returns ``False``) without ``WORLD_SIZE`` or with
    ``WORLD_SIZE=1``; returns ``True`` at once if a group already exists. On CUDA
    the process's device is set to ``cuda:LOCAL_RANK`` first (nccl collectives
    need it).
    """
    if initialized():
        return world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not available():
        return False
    chosen = backend()
    if chosen == "nccl":
        torch.cuda.set_device(device())
    dist.init_process_group(chosen, timeout=datetime.timedelta(seconds=timeout_s))
    logger.info("joined the process group: rank %d of %d, backend %s", rank(), world_size(), chosen)
    return world_size() > 1


def shutdown(wait: bool = True) -> None:
    """Leave the process group (if this process joined one); ``wait``: after every rank is done with it."""
    if initialized():
        try:
            if wait:
                barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (downloads, training a cached model); the others run it after.

    The barrier is reached even when rank 0's block raises, so the other ranks
    never hang: they run the block themselves and meet the same error.
    """
    if rank() != 0:
        barrier()
    try:
        yield
    finally:
        if rank() == 0:
            barrier()


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Inside the block this process works alone: :func:`active` is ``False`` (no DDP in the trainers)."""
    previous = getattr(_local, "suppressed", False)
    _local.suppressed = True
    try:
        yield
    finally:
        _local.suppressed = previous


def shard(rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """``(rank, world)`` of this process (``(0, 1)`` outside a process group)."""
    return (rank() if rank_ is None else rank_, world_size() if world is None else world)


def gather_objects(value: Any) -> list[Any] | None:
    """Every rank's ``value`` on rank 0 (in rank order); ``None`` on the other ranks."""
    if not active():
        return [value]
    gathered: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not active():
        return value
    holder = [value if rank() == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics drift apart under DDP)."""
    if not active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def epoch_order(count: int, seed: int, epoch: int) -> Tensor:
    """This rank's sample order for one epoch.

    In one process: a permutation of ``range(count)`` seeded by ``seed + epoch``.
    Under DDP: the same permutation split by a :class:`DistributedSampler` (padded so
    that every rank gets the same number of samples, hence of batches).
    """
    if not active():
        return torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch))
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(count), num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


class _TrainingView(nn.Module):
    """The trained network as a trainer's loss sees it: DDP for training forwards, the bare module otherwise.

    A trainer's step both attacks the network (eval mode, parameters frozen: no
    gradient to synchronise, and the number of forwards may differ across ranks)
    and computes the training loss (training mode: gradients must be averaged).
    Only the latter goes through :class:`DistributedDataParallel`.
    """

    def __init__(self, module: nn.Module, ddp: nn.Module):
        super().__init__()
        self.module = module
        self._ddp = [ddp]  # a list: not registered, so state_dict() keys stay the module's own

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.module.training and torch.is_grad_enabled():
            return self._ddp[0](*args, **kwargs)
        return self.module(*args, **kwargs)


def training_network(module: nn.Module) -> nn.Module:
    """``module`` itself in one process; under DDP a view whose training forwards synchronise gradients.

    The wrapped module stays the one that is trained and checkpointed (rank 0's
    ``state_dict()`` has the module's own keys, so single-process and DDP
    checkpoints are interchangeable). Parameters start equal on every rank
    (DDP broadcasts rank 0's at construction).
    """
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    tensors = list(module.parameters())
    where = tensors[0].device if tensors else torch.device("cpu")
    ddp = DistributedDataParallel(module, device_ids=[where.index] if where.type == "cuda" else None)
    return _TrainingView(module, ddp)
