"""BERT-base pretraining throughput on one GPU: phase 1 (128) and phase 2 (512), packed and unpacked.

For a person with one GPU: a minute or two in all. Synthetic instances of a short-document
corpus (lengths exponential around 90 tokens at 128 and 110 at 512, capped at the length:
about a quarter full-length at 128, as the data step makes them from paragraphs), 15% of
tokens masked (Google's max_predictions_per_seq: 20 / 80), the bert-base-uncased vocab size.
Each configuration runs bertpipe's training path: the collator (packed or padded to the
batch's longest row), the masked-positions-only forward, the mixed precision the trainer picks
(`auto`: bf16 where supported), fused AdamW, gradient clipping. A batch counts instances.

    python benchmarks/bench_gpu.py                      # base at 128 and 512, packed and unpacked
    python benchmarks/bench_gpu.py --compile            # with torch.compile
    python benchmarks/bench_gpu.py --cpu-smoke          # a tiny run on CPU: checks the script, measures nothing

Prints real (non-padding) tokens/s, instances/s, padding share, MFU (useful FLOPs, see
components/training/throughput.py, over the GPU's bf16 peak; --peak-tflops overrides the
table) and peak GPU memory. Attention: packed, each instance attends in a group of instances of
about its length, with a mask of its own tokens, so SDPA runs its memory-efficient kernel (flash
takes no mask; unpacked rows carry a padding mask, so they do not get flash either).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import components  # noqa: E402,F401  (first: the malloc tuning every bertpipe process gets)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from components.core import models  # noqa: E402
from components.core.batches import InstanceArrays, batch_to, collate, collate_packed  # noqa: E402
from components.training.lazy_dynamo import compile_model  # noqa: E402
from components.training.optimization import make_optimizer  # noqa: E402
from components.training.precision import Precision  # noqa: E402
from components.training.throughput import batch_training_flops, peak_flops  # noqa: E402

VOCAB_SIZE = 30522
MEAN_LENGTH = {128: 90, 512: 110}
MAX_PREDICTIONS = {128: 20, 512: 80}


def synthetic_instances(count: int, max_seq_length: int, seed: int) -> InstanceArrays:
    """Short-document-like instances: [CLS] A [SEP] B [SEP] with random ids, 15% of the tokens masked."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.exponential(MEAN_LENGTH[max_seq_length], count).astype(np.int64), 16, max_seq_length)
    masked_counts = np.minimum(MAX_PREDICTIONS[max_seq_length], np.maximum(1, np.round(0.15 * (lengths - 3)).astype(np.int64)))
    ids = rng.integers(1000, VOCAB_SIZE, int(lengths.sum())).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    positions = [np.sort(rng.choice(np.arange(1, n - 1), size=k, replace=False)) for n, k in zip(lengths, masked_counts)]
    return InstanceArrays(
        input_ids=ids, input_offsets=offsets, segment_a_length=(lengths // 2).astype(np.int64),
        masked_positions=np.concatenate(positions).astype(np.int16), masked_ids=rng.integers(1000, VOCAB_SIZE, int(masked_counts.sum())).astype(np.int32),
        masked_offsets=np.concatenate([[0], np.cumsum(masked_counts)]), next_sentence_label=rng.integers(0, 2, count).astype(np.int64),
    )


def measure(preset: str, length: int, batch_size: int, packed: bool, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = models.build_model(preset, VOCAB_SIZE).to(device)
    forward = models.MaskedPretrainingModel(model).train()
    trained = compile_model(forward) if args.compile else forward
    optimizer = make_optimizer(model, "adamw", 1e-4, 0.01)
    precision = Precision(args.mixed_precision, device)
    arrays = synthetic_instances(batch_size * (args.steps + args.warmup), length, seed=length)
    peak = peak_flops(device, args.peak_tflops)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, tokens, slots, flops = [], 0.0, 0.0, 0.0
    for step in range(args.warmup + args.steps):
        rows = np.arange(step * batch_size, (step + 1) * batch_size)
        started = time.perf_counter()
        batch = collate_packed(arrays, rows) if packed else collate(arrays, rows)
        lengths, masked = batch["instance_lengths"], len(batch["mlm_labels"])
        batch = batch_to(batch, device)
        with precision.autocast():
            mlm_logits, nsp_logits = trained(**models.inputs_of(batch))
        mlm_loss, nsp_loss = models.pretraining_losses(mlm_logits, nsp_logits, batch)
        precision.backward(mlm_loss + nsp_loss)
        precision.clip(optimizer, model.parameters(), 1.0)
        precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
            tokens += float(lengths.sum())
            slots += float(batch["input_ids"].numel())
            flops += batch_training_flops(model.config, lengths, masked)
    seconds = sum(times)
    return {
        "tokens_per_second": tokens / seconds, "sequences_per_second": batch_size * len(times) / seconds, "padding_share": 1 - tokens / slots,
        "mfu": flops / seconds / peak if peak else None, "median_step_ms": statistics.median(times) * 1e3, "precision": precision.name,
        "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--batch-128", type=int, default=256, help="instances per step at 128")
    parser.add_argument("--batch-512", type=int, default=64, help="instances per step at 512")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="steps not timed (kernel selection, allocator, compilation)")
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "bf16", "fp16", "no"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's dense bf16 peak (0: from the table by name)")
    parser.add_argument("--cpu-smoke", action="store_true", help="run a tiny preset for a few steps on CPU (checks the script; no figures)")
    args = parser.parse_args()
    if args.cpu_smoke:
        device = torch.device("cpu")
        args.preset, args.steps, args.warmup, args.batch_128, args.batch_512 = "tiny", 2, 1, 8, 4
    elif not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU (none visible); run with --cpu-smoke to check the script on CPU")
    else:
        device = torch.device("cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    print(f"{args.preset} on {name}, torch {torch.__version__}, mixed_precision={args.mixed_precision}, compile={args.compile}; "
          f"{args.steps} timed steps after {args.warmup}")
    header = f"{'len':>4} {'layout':8} {'batch':>5} | {'tokens/s':>10} {'inst/s':>8} {'padding':>7} {'MFU':>6} | {'step ms':>8} {'peak GB':>7} {'dtype':>5}"
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        batch_size = args.batch_128 if length <= 128 else args.batch_512
        for packed in (True, False):
            r = measure(args.preset, length, batch_size, packed, args, device)
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
            peak = f"{r['peak_gb']:.1f}" if r["peak_gb"] is not None else "-"
            print(f"{length:>4} {'packed' if packed else 'unpacked':8} {batch_size:>5} | {r['tokens_per_second']:>10,.0f} {r['sequences_per_second']:>8,.1f} "
                  f"{r['padding_share']:>7.1%} {mfu:>6} | {r['median_step_ms']:>8.1f} {peak:>7} {r['precision']:>5}", flush=True)


if __name__ == "__main__":
    main()
