"""The FLOP ceiling of bench_training.py: what ratio over HF Trainer the arithmetic alone allows.

Per instance, forward + backward: 6 x encoder parameters per computed token slot, attention
12 x layers x hidden per slot per slot it scores (PaLM's estimate), and the MLM head
(transform + vocab projection, 6 x (hidden^2 + hidden x vocab)) per position it runs at.
HF Trainer on BertForPreTraining: every instance padded to max_seq_length, attention over
all of it, the head at every position. bertpipe: the packed row's slots (a batch's instances end
to end), attention over the instance groups (components/core/grouped_attention.py), the head at
the masked positions only. Embedding
lookups, the optimizer and the memory-bound ops (softmax, dropout, layer norm) are left out:
both sides pay them, HF more (its logits are max_seq_length / 0.15 times larger).

    PYTHONPATH=$PWD python benchmarks/flop_ceiling.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench_training import BATCH, prepare

from components.core.instances import read_manifest
from components.core.models import PRESETS
from components.core.packing import GROUP_WIDTHS
from components.training.stream import TrainingStream


def per_slot_flops(preset: dict, vocab_size: int) -> tuple[float, float, float]:
    """(encoder per token slot, attention per scored pair, MLM head per position)."""
    hidden, layers, intermediate = preset["hidden_size"], preset["num_hidden_layers"], preset["intermediate_size"]
    return 6 * layers * (4 * hidden * hidden + 2 * hidden * intermediate), 12 * layers * hidden, 6 * (hidden * hidden + hidden * vocab_size)


def batch_shape(batch: dict) -> tuple[int, int, int, float]:
    """(instances, computed token slots, masked positions, scored attention pairs) of a packed batch."""
    pairs = sum(count * width**2 for count, width in zip(batch["attention_group_counts"].tolist(), GROUP_WIDTHS))
    return len(batch["instance_lengths"]), batch["input_ids"].numel(), len(batch["mlm_labels"]), float(pairs)


def main(steps: int = 200) -> None:
    with tempfile.TemporaryDirectory(prefix="flop-ceiling-") as tmp:
        _, vocab_size, data = prepare(Path(tmp), sorted(BATCH))
        for length, batch_size in sorted(BATCH.items()):
            stream = TrainingStream(data[length], read_manifest(data[length]), batch_size=batch_size, seed=42, packed=True)
            totals = [0.0] * 5
            for _ in range(steps):
                batch = next(stream)
                for i, value in enumerate((*batch_shape(batch), float(batch["instance_lengths"].sum()))):
                    totals[i] += value
            instances, slots, masked, pairs, real = totals
            print(f"{length}: {real / instances:.1f} real tokens per instance ({real / instances / length:.0%} of {length}), "
                  f"{masked / instances:.1f} masked, packed padding {1 - real / slots:.1%}, over {steps} batches of {batch_size}")
            for name in ("tiny", "mini"):
                encoder, attention, head = per_slot_flops(PRESETS[name], vocab_size)
                hf_encoder = length * encoder + length * length * attention
                hf = hf_encoder + length * head
                ours_encoder = (slots * encoder + pairs * attention) / instances
                ours = ours_encoder + masked / instances * head
                print(f"  {name}: HF {hf / 1e9:.2f} GFLOP per instance (heads {1 - hf_encoder / hf:.0%}), bertpipe {ours / 1e9:.3f} "
                      f"(heads {1 - ours_encoder / ours:.0%}): ceiling {hf / ours:.1f}x; encoders alone {hf_encoder / ours_encoder:.1f}x")


if __name__ == "__main__":
    main()
