"""Process-group plumbing for torchrun: one place that knows about ranks and devices.

Everything here is a no-op in a single process, so the trainer has one code path:

    info = init_distributed()          # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    model = wrap_ddp(model.to(info.device), info)
    ...
    cleanup()

Backend: NCCL on CUDA, gloo on CPU. Run on CPU with e.g.
`python -m torch.distributed.run --standalone --nproc_per_node=2 script.py`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "init_distributed",
    "wrap_ddp",
    "unwrap_model",
    "barrier",
    "cleanup",
    "is_main",
    "get_rank",
    "get_world_size",
    "broadcast_object",
    "gather_object",
    "all_reduce_mean",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. `device` is the one it should compute on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_main: bool = True
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(
    backend: str | None = None,
    *,
    device: str | torch.device | None = None,
    timeout: timedelta = timedelta(minutes=30),
) -> DistInfo:
    """Join the process group torchrun describes in the environment (or none, when alone).

    `device=None` picks `cuda:<local_rank>` when CUDA is available, else CPU; pass
    `device="cpu"` to force CPU (gloo) on a GPU machine. Calling it again, or after
    someone else initialised the group, returns the same description.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()

    if device is None:
        use_cuda = torch.cuda.is_available()
    else:
        use_cuda = torch.device(device).type == "cuda"
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' requested but CUDA is not available")
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")

    used_backend: str | None = None
    if world_size > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
        if not dist.is_initialized():
            used_backend = backend or ("nccl" if use_cuda else "gloo")
            dist.init_process_group(backend=used_backend, timeout=timeout)
            log.info("joined process group: rank %d/%d backend %s device %s", rank, world_size, used_backend, dev)
        else:
            used_backend = dist.get_backend()
    return DistInfo(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=dev,
        is_main=rank == 0,
        backend=used_backend,
    )


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return get_rank() == 0


def barrier() -> None:
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if _initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any = None, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (picklable objects; returns `obj` when alone)."""
    if not _initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on `dst`; None elsewhere (`[obj]` when alone)."""
    if not _initialized() or dist.get_world_size() == 1:
        return [obj]
    rank, world = dist.get_rank(), dist.get_world_size()
    out: list[Any] | None = [None] * world if rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` across ranks (in place; returned for convenience)."""
    if _initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= dist.get_world_size()
    return tensor


def wrap_ddp(model: nn.Module, info: DistInfo, *, find_unused_parameters: bool = False, **kwargs: Any) -> nn.Module:
    """DistributedDataParallel over the trainable parameters; the model itself when alone.

    Frozen parts (text encoder, EnCodec) must have `requires_grad=False`: DDP then
    leaves them out of gradient buckets, so `find_unused_parameters=False` holds as
    long as every *trainable* parameter receives a gradient on every step. Move the
    model to `info.device` first.
    """
    if not info.distributed:
        return model
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters")
    if info.device.type == "cuda":
        kwargs.setdefault("device_ids", [info.device.index])
        kwargs.setdefault("output_device", info.device.index)
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
