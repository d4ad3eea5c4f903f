"""torchrun / DistributedDataParallel helpers: one process per device, rank 0 logs and writes checkpoints.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything runs as a single process. NCCL is
used between GPUs, gloo on the CPU (which is how the CI test runs two processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import resolve_device
from .checkpoints import rng_state


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_name: str = "auto") -> DistributedContext:
    """Join the process group if launched by torchrun (or by a test with the same variables)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, device)


def teardown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def wrap(module: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """DDP around a module on its device (unchanged in a single process)."""
    if not context.enabled:
        return module
    ids = [context.device.index] if context.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def gather_rng_states(context: DistributedContext) -> list | None:
    """Every process's RNG state (None in a single process), for rank 0's checkpoint; all ranks must call it."""
    if not context.enabled:
        return None
    states: list = [None] * context.world_size
    dist.all_gather_object(states, rng_state())
    return states


def mean_over_ranks(value: float, context: DistributedContext) -> float:
    """Average a scalar (a loss) over all processes so that rank 0 logs the global figure."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    context: DistributedContext,
    seed: int,
    workers: int = 0,
) -> torch.utils.data.DataLoader:
    """A loader whose sampler splits each epoch across processes (call `set_epoch` on both each epoch)."""
    sampler = torch.utils.data.distributed.DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=context.device.type == "cuda",
    )
