"""Data-parallel evaluation for `aura-hooked`, the way lm-eval's `hf` model does it: under `accelerate launch` or
`torchrun` (WORLD_SIZE > 1) each process is one rank of an `accelerate.Accelerator`; lm-eval's evaluator gives each
rank its share of the requests and gathers through `all_gather` / `gather_object` / `barrier`."""

from __future__ import annotations

import os
from datetime import timedelta

import torch


class DataParallel:
    """Rank, world size and the collectives lm-eval's evaluator calls; one process: rank 0 of 1, no-ops."""

    def __init__(self) -> None:
        self.accelerator = None
        self.rank, self.world_size = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator, InitProcessGroupKwargs

            self.accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                                           kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(weeks=52))])
            self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes

    @property
    def device(self) -> str | None:
        """This rank's device (`cuda:<local rank>` or cpu) when distributed, else None (the caller chooses)."""
        return str(self.accelerator.device) if self.accelerator is not None else None

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.world_size == 1 else self.accelerator.gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size == 1:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.world_size > 1:
            self.accelerator.wait_for_everyone()
