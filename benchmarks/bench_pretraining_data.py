"""Google's create_pretraining_data.py (bert-tensorflow) vs. bertpipe's step, side by side on the same corpus.

    PYTHONPATH=$PWD python benchmarks/bench_pretraining_data.py [--corpus ../shared/data/pd-corpus.txt.gz]

Each contender runs in its own process; the parent samples the summed RSS of that
process tree every 50 ms (peak memory) and times it. Prints instances per second,
peak memory, the ratios, and whether the one-worker output is identical to Google's.
The memory check runs the sharded step on the corpus and on the corpus repeated 4x.
Both sides tokenize on one thread (TOKENIZERS_PARALLELISM=false); same interpreter.
CPU seconds (user + system of the whole process tree) are printed beside wall time: on a
shared, loaded machine they say more about the work done than the wall clock does.
Run it once before timing on a fresh checkout: the first run compiles the numba loop
(cached under components/__pycache__ afterwards).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "pd-corpus.txt.gz"


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over a process and its descendants, from /proc.

    RSS counts a shared page (libLLVM, libarrow, pages a worker shares with its parent)
    once per process that maps it; PSS splits it between them, so its sum is the tree's
    real footprint. Both are printed.
    """
    rss, pss, stack = 0, 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return rss, pss


def _measure(code: str, env: dict) -> dict:
    """Run `code` in a fresh interpreter; returns its JSON result plus wall time and peak tree RSS."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    peak_rss = peak_pss = 0
    stop = threading.Event()

    def sample():
        nonlocal peak_rss, peak_pss
        while not stop.is_set():
            rss, pss = _tree_memory(process.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.05)

    start = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _ = process.communicate()
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    stop.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"contender failed with exit code {process.returncode}")
    return {**json.loads(out.decode().strip().splitlines()[-1]), "seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak_rss / 2**20, "peak_pss_mb": peak_pss / 2**20}


# Formatted with str.format like the code it is prepended to: braces are doubled.
_DIGEST = """
def digest(rows):
    import hashlib, json
    h = hashlib.sha256()
    count = 0
    for count, row in enumerate(rows, start=1):
        h.update(json.dumps(row, sort_keys=True).encode())
    return {{"digest": h.hexdigest(), "instances": count}}
"""

REFERENCE = _DIGEST + """
import json
from tests.google_reference import iter_reference_rows
rows = iter_reference_rows({corpus!r}, {vocab!r}, max_seq_length=128, dupe_factor={dupe}, whole_word_mask=True)
print(json.dumps(digest(rows)))
"""

OUR_DIGEST = _DIGEST + """
import json
from components.core.instances import load_split
table = load_split({out!r}, "train")
print(json.dumps(digest(row for batch in table.to_batches(10000) for row in batch.to_pylist())))
"""

OURS = """
import json, tempfile
from components.data.local import create_pretraining_data
from components.data.settings import DataSettings
out = tempfile.mkdtemp(dir={tmp!r})  # a fresh folder each run: an existing one with the same data is reused, not rebuilt
manifest = create_pretraining_data({corpus!r}, {vocab_dir!r}, out, num_workers={workers}, settings=DataSettings(
    max_seq_length=128, dupe_factor={dupe}, dev_fraction=0, test_fraction=0, shard_size_mb={shard_mb}))
print(json.dumps({{"instances": manifest["splits"]["train"]["num_instances"], "out": out}}))
"""


def _median_run(label: str, code: str, env: dict, repeats: int) -> dict:
    runs = [_measure(code, env) for _ in range(repeats)]
    result = dict(runs[-1])
    result["seconds"] = statistics.median(r["seconds"] for r in runs)
    result["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
    result["peak_mb"] = statistics.median(r["peak_mb"] for r in runs)
    result["peak_pss_mb"] = statistics.median(r["peak_pss_mb"] for r in runs)
    result["per_second"] = result["instances"] / result["seconds"]
    print(
        f"{label:<44} {result['instances']:>9,} instances {result['seconds']:6.1f} s (CPU {result['cpu_seconds']:5.1f} s) {result['per_second']:8,.0f}/s "
        f"peak RSS {result['peak_mb']:5.0f} MB, PSS {result['peak_pss_mb']:5.0f} MB",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--vocab", default="", help="a vocab folder (default: train a 30,000-token vocab on the corpus)")
    parser.add_argument("--dupe-factor", type=int, default=5)
    parser.add_argument("--shard-size-mb", type=float, default=4.0, help="shard size of the sharded runs")
    parser.add_argument("--repeats", type=int, default=1, help="runs per contender (median); the reference alone takes minutes")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        text = gzip.open(args.corpus, "rt", encoding="utf-8").read() if args.corpus.endswith(".gz") else Path(args.corpus).read_text("utf-8")
        plain = Path(tmp, "corpus.txt")
        plain.write_text(text, encoding="utf-8")
        times4 = Path(tmp, "corpus-x4.txt")
        times4.write_text("\n\n".join([text.rstrip("\n")] * 4) + "\n", encoding="utf-8")
        vocab_dir = args.vocab
        if not vocab_dir:
            from components.vocab.export import VocabSettings, export_vocab

            vocab_dir = str(Path(tmp, "vocab"))
            export_vocab(vocab_dir, corpus=str(plain), settings=VocabSettings(vocab_size=30000))
        print(f"corpus {args.corpus}: {len(text.encode()) / 1e6:.1f} MB; max_seq_length 128, dupe_factor {args.dupe_factor}, whole-word masking; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")

        def ours(label, corpus, workers, shard_mb, check=False):
            code = OURS.format(corpus=str(corpus), vocab_dir=vocab_dir, tmp=tmp, dupe=args.dupe_factor, shard_mb=shard_mb, workers=workers)
            result = _median_run(label, code, env, args.repeats)
            if check:  # outside the timed, memory-sampled run
                result["digest"] = json.loads(subprocess.run([sys.executable, "-c", OUR_DIGEST.format(out=result["out"])], env=env, cwd=ROOT, capture_output=True, check=True).stdout.decode().splitlines()[-1])["digest"]
            return result

        one = ours("bertpipe, 1 worker, one shard", plain, 1, 1e6, check=True)
        two = ours(f"bertpipe, 2 workers, {args.shard_size_mb:g} MB shards", plain, 2, args.shard_size_mb)
        small = ours(f"bertpipe, 1 worker, {args.shard_size_mb:g} MB shards", plain, 1, args.shard_size_mb)
        big = ours(f"bertpipe, 1 worker, {args.shard_size_mb:g} MB shards, corpus x4", times4, 1, args.shard_size_mb)
        print(f"peak memory, corpus x4 / x1 with {args.shard_size_mb:g} MB shards: RSS {big['peak_mb'] / small['peak_mb']:.2f}, PSS {big['peak_pss_mb'] / small['peak_pss_mb']:.2f}")
        if args.skip_reference:
            print(f"load average {os.getloadavg()[0]:.1f} at the end")
            return
        ref = _median_run("Google create_pretraining_data.py (1 core)", REFERENCE.format(corpus=str(plain), vocab=f"{vocab_dir}/vocab.txt", dupe=args.dupe_factor), env, args.repeats)
        print(f"identical to Google's output (1 worker, one shard): {one['digest'] == ref['digest']}")
        print(f"throughput vs Google: 1 worker {one['per_second'] / ref['per_second']:.1f}x, 2 workers {two['per_second'] / ref['per_second']:.1f}x")
        cpu_ratio = (ref["cpu_seconds"] / ref["instances"]) / (one["cpu_seconds"] / one["instances"])
        print(f"CPU time per instance vs Google (1 worker; less sensitive to a loaded machine): {cpu_ratio:.1f}x less")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        print(f"peak memory vs Google: one shard {one['peak_mb'] / ref['peak_mb']:.2f}, {args.shard_size_mb:g} MB shards {small['peak_mb'] / ref['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
