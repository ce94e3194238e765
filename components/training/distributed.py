"""Process-group setup for torchrun: which rank this process is, and collective helpers that are no-ops alone."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def is_rank() -> bool:
    """Started by torchrun (or a TrainJob's torchrun): this process is one rank of a phase."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def start() -> Placement:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); a lone process needs none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Placement()
    placement = Placement(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(placement.local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        log.info("joined process group as rank %d of %d", placement.rank, world_size)
    return placement


def sum_across(values: list[float], placement: Placement, device) -> list[float]:
    if placement.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value, placement: Placement) -> list:
    if placement.world_size == 1:
        return [value]
    gathered = [None] * placement.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(placement: Placement) -> None:
    if placement.world_size > 1:
        dist.barrier()
