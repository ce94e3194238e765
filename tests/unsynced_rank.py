"""A torchrun rank whose DDP never all-reduces gradients: the control run of tests/test_distributed.py.

Run in place of `-m pipelines.cli` in the exact torchrun command the train-phase task builds;
each rank then steps on its own half of the global batch, so its weights must differ from a
synchronised run's.
"""

import contextlib
import runpy

import torch


class Unsynced(torch.nn.Module):
    """DistributedDataParallel's interface (forward, no_sync) without its gradient hooks."""

    def __init__(self, module, device_ids=None):
        super().__init__()
        self.module = module

    def forward(self, *inputs, **keywords):
        return self.module(*inputs, **keywords)

    def no_sync(self):
        return contextlib.nullcontext()


torch.nn.parallel.DistributedDataParallel = Unsynced
runpy.run_module("pipelines.cli", run_name="__main__")
