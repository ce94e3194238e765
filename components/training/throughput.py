"""Model FLOPs utilisation (MFU) on GPUs: the useful training FLOPs per second over the device's bf16 peak.

Counted per batch from its real shape: 6 FLOPs per parameter per token for the
encoder's matmuls, 12 * layers * hidden * width per token for attention scores
(PaLM's estimate), and the vocab projection only at the masked positions, where
this trainer computes it.
"""

from __future__ import annotations

import os

import torch

# Dense bf16 peak, FLOP/s (vendor datasheets). Override with BERTPIPE_PEAK_TFLOPS.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "A10": 125e12, "V100": 125e12, "T4": 65e12}


def peak_flops(device: torch.device) -> float | None:
    if os.environ.get("BERTPIPE_PEAK_TFLOPS"):
        return float(os.environ["BERTPIPE_PEAK_TFLOPS"]) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def batch_training_flops(config, batch_size: int, width: int, masked: int) -> float:
    """Forward + backward FLOPs of one batch of batch_size x width tokens with `masked` MLM targets."""
    hidden, layers, intermediate = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    encoder_parameters = layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    tokens = batch_size * width
    encoder = 6 * encoder_parameters * tokens + 12 * layers * hidden * width * tokens
    heads = 6 * masked * (hidden * hidden + hidden * config.vocab_size) + 6 * batch_size * hidden * hidden
    return float(encoder + heads)
