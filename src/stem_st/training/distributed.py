"""Multi-process data parallel (``torchrun``) helpers; single-process when not launched so."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPU, Gloo on CPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
    return info


def mean_across(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a scalar over processes."""
    if info.world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= info.world
    return value
