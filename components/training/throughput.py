"""Throughput figures of training: real tokens, padding share and model FLOPs utilisation (MFU).

Real tokens are the instances' own tokens (not padding); padding share is the part of the
token slots the model computed that held padding. FLOPs are the useful ones, counted per
instance from its real length: 6 per encoder parameter per token for the matmuls (forward +
backward), 12 * layers * hidden * length per token for the attention scores (PaLM's
estimate), and the vocab projection only at the masked positions, where this trainer
computes it. MFU is those FLOPs per second over the device's dense bf16 peak.
"""

from __future__ import annotations

import torch

# Dense bf16 peak, FLOP/s (vendor datasheets, SXM parts); the peak_tflops setting overrides it.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12, "A10": 125e12, "V100": 125e12, "T4": 65e12}


def peak_flops(device: torch.device, peak_tflops: float = 0.0) -> float | None:
    """The device's peak FLOP/s: the override if given, else by GPU name; None (no MFU) on CPU or an unknown GPU."""
    if peak_tflops:
        return peak_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def batch_training_flops(config, instance_lengths: torch.Tensor, masked: int) -> float:
    """Useful forward + backward FLOPs of one batch: its instances' real tokens and `masked` MLM targets."""
    hidden, layers, intermediate = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    encoder_parameters = layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    lengths = instance_lengths.double()
    encoder = 6 * encoder_parameters * lengths.sum() + 12 * layers * hidden * (lengths * lengths).sum()
    heads = 6 * masked * (hidden * hidden + hidden * config.vocab_size) + 6 * len(lengths) * hidden * hidden
    return float(encoder + heads)


def batch_counts(batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Real tokens, token slots computed (real + padding) and instances of a collated batch, packed or not."""
    return {"tokens": float(batch["instance_lengths"].sum()), "slots": float(batch["input_ids"].numel()), "sequences": float(len(batch["instance_lengths"]))}
