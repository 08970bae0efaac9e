"""Distributed data parallel helpers: one process per device, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m <package> train`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` (and the rendezvous address) for each process; ``setup`` reads them and joins
the process group (gloo on CPU, nccl on CUDA). Started any other way, ``setup`` returns a
single-process context and every helper here is a no-op, so the training code has one path.

Rank 0 does everything that writes (checkpoints, MLflow, reports, the published model); the
others only compute. ``run_on_main`` runs a step on rank 0 and hands its result, or its error,
to every rank, so all of them stop with the same message instead of waiting forever.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import ConfigError, ProjectError

# Object-passing helpers take and return Any (not a TypeVar): the same file serves Python
# 3.11 projects, and PEP 695 generics would be the lint-preferred spelling from 3.12 on.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank, number of processes, local device index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when setup() created the process group

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str) -> DistributedContext:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    if dist.is_available() and dist.is_initialized():  # the caller set one up (e.g. a notebook)
        return DistributedContext(dist.get_rank(), dist.get_world_size(), _local_rank())
    if not launched_by_torchrun():
        return DistributedContext()
    if device_type not in ("cpu", "cuda"):
        raise ConfigError(
            f"distributed training runs on cpu or cuda, not {device_type}: set training.device"
        )
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = _local_rank()
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    _import_before_init()
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, True)


def cleanup(ctx: DistributedContext) -> None:
    """Destroy the process group: with nothing else holding it (see ``_import_before_init``),
    this joins the backend's threads here, before the interpreter starts shutting down."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast(ctx: DistributedContext, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not ctx.enabled:
        return value
    holder = [value if ctx.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather(ctx: DistributedContext, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ctx.enabled:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_reduce_sum(
    ctx: DistributedContext, values: list[float], device: torch.device
) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (losses, correct counts, sample counts)."""
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def sync_buffers(ctx: DistributedContext, model: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank: each rank updated its
    own copy in its last forward passes, and validation and checkpoints must agree."""
    if not ctx.enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def run_on_main(ctx: DistributedContext, step: Callable[[], Any]) -> Any:
    """Run ``step`` on rank 0 only; every rank returns its result or raises its error.

    Ranks other than 0 re-raise a user error as a plain ``ProjectError`` with the same message
    (exception classes with extra constructor arguments do not survive pickling).
    """
    if not ctx.enabled:
        return step()
    outcome: tuple[bool, Any] = (True, None)
    if ctx.is_main:
        try:
            outcome = (True, step())
        except ProjectError as exc:
            outcome = (False, str(exc))
            broadcast(ctx, outcome)
            raise
        except BaseException as exc:
            broadcast(ctx, (False, f"rank 0 failed: {type(exc).__name__}: {exc}"))
            raise
    outcome = broadcast(ctx, outcome)
    ok, payload = outcome
    if not ok:
        raise ProjectError(payload)
    return payload  # type: ignore[no-any-return]


def _import_before_init() -> None:
    """Import ``torch.distributed.nn`` while no process group exists.

    Its functions take ``group=group.WORLD`` as a default argument, evaluated at import time.
    DistributedDataParallel imports it lazily, after ``init_process_group``, so those defaults
    captured the live default group: ``destroy_process_group`` then left the gloo group, its
    worker threads and its TCP loop running until the interpreter's own shutdown destroyed it
    (torch 2.13; seen in gdb: ``~ProcessGroupGloo`` called from ``finalize_modules``). Native
    threads still running while the interpreter and its extension modules shut down can abort
    a process that already succeeded ("terminate called without an active exception",
    torchrun exit 1). Imported first, the defaults are None and the group dies in ``cleanup``.
    """
    import torch.distributed.nn  # noqa: F401


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))
