"""Mixed precision for training: which autocast dtype a device gets, and fp16's loss scaling.

auto = bf16 on GPUs that support it (Ampere and newer), fp32 elsewhere: bf16 autocast is
slower than fp32 on CPUs without AMX (measured on the 2-core CI machine). fp16 keeps fp32
master weights and scales the loss (torch.amp.GradScaler) so small gradients survive.
"""

from __future__ import annotations

import contextlib
import math

import torch

from components.core.errors import BertpipeError


def resolve(choice: str, device: torch.device) -> str:
    """The precision a run uses: bf16, fp16 or no; refuses what the device cannot do."""
    cuda = device.type == "cuda"
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if choice == "auto":
        return "bf16" if bf16_ok else "no"
    if choice == "fp16" and not cuda:
        raise BertpipeError("mixed_precision=fp16 needs a CUDA GPU; use mixed_precision=no (or bf16) on CPU")
    if choice == "bf16" and cuda and not bf16_ok:
        raise BertpipeError(f"{torch.cuda.get_device_name(device)} has no bf16; use mixed_precision=fp16 (with loss scaling) or no")
    return choice


class Precision:
    """autocast around the forward, and backward/step through a GradScaler under fp16."""

    def __init__(self, choice: str, device: torch.device):
        self.device, self.name = device, resolve(choice, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.name == "fp16" else None

    def autocast(self):
        if self.name == "no":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.name == "bf16" else torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def clip(self, optimizer, parameters, max_norm: float) -> torch.Tensor:
        """Clip the (unscaled) gradients; returns their norm. Under fp16 an overflow (inf norm) is
        expected now and then: the step is skipped and the scale lowered, not an error."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm or math.inf)

    def step(self, optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
