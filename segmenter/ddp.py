"""Several processes / GPUs through ``torchrun`` and DistributedDataParallel (nothing home-made).

``torchrun --nproc_per_node N -m segmenter train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous variables; :func:`setup` reads them, initialises the process
group (``nccl`` on CUDA, ``gloo`` on CPU) and picks the local GPU. Without those variables it
does nothing and training runs in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "cpu") -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's environment; returns the process's place.

    ``device``: ``"cuda"`` or ``"cpu"`` (after ``auto`` was resolved); the backend follows it.
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, True)


def device_for(info: DistInfo, device: str) -> str:
    """The device string of this process: ``cuda:<local_rank>`` under DDP on GPUs."""
    if device.startswith("cuda") and info.enabled:
        return f"cuda:{info.local_rank}"
    return device


def wrap(model, info: DistInfo, device: str):
    """Wrap ``model`` in DistributedDataParallel when running under torchrun (SyncBatchNorm on GPUs)."""
    if not info.enabled:
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[info.local_rank], output_device=info.local_rank)
    return DDP(model)


def shard(n: int, info: DistInfo, epoch: int, seed: int, shuffle: bool = True) -> list[int]:
    """This rank's indices of ``range(n)`` for ``epoch`` (torch's DistributedSampler: every rank
    gets the same count, padding by repetition)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=shuffle, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.initialized_here:
        import torch.distributed as dist

        dist.destroy_process_group()
