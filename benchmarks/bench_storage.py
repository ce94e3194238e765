"""Publishing a checkpoint-like folder to S3: storage.publish_dir (parallel, sha256 manifest) vs one file at a time.

Runs against a throwaway SeaweedFS on loopback. Prints medians of several runs, the
ratio, and the process's peak RSS. Usage: python benchmarks/bench_storage.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from components.core import storage
from pipelines.stack_servers import SeaweedFS


def make_folder(root: Path, small_files: int, small_kb: int, big_mb: int) -> int:
    root.mkdir(parents=True)
    for i in range(small_files):
        (root / f"shard-{i:04d}.bin").write_bytes(os.urandom(small_kb * 1024))
    (root / "model.safetensors").write_bytes(os.urandom(big_mb * 1024 * 1024))
    return small_files * small_kb * 1024 + big_mb * 1024 * 1024


def sequential_upload(folder: Path, uri: str) -> None:
    """The obvious alternative: upload_file for each file in turn, no manifest."""
    bucket, key = storage.split_s3(uri)
    client = storage.s3_client()
    for path in sorted(folder.rglob("*")):
        client.upload_file(str(path), bucket, f"{key}/{path.relative_to(folder).as_posix()}")


def timed(function, runs: int) -> float:
    times = []
    for run in range(runs):
        started = time.perf_counter()
        function(run)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=200)
    parser.add_argument("--small-kb", type=int, default=64)
    parser.add_argument("--big-mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        server = SeaweedFS(Path(tmp) / "s3", access_key="bench", secret_key="bench-secret")
        server.start()
        try:
            os.environ.update(server.env())
            folder = Path(tmp) / "folder"
            total = make_folder(folder, args.small_files, args.small_kb, args.big_mb)
            base = f"s3://{server.bucket}/bench"
            sequential = timed(lambda run: sequential_upload(folder, f"{base}/sequential-{run}"), args.runs)
            published = timed(lambda run: storage.publish_dir(folder, f"{base}/published-{run}"), args.runs)
        finally:
            server.stop(kill=True)
    megabytes = total / 1e6
    print(f"folder: {args.small_files} x {args.small_kb} KB + 1 x {args.big_mb} MB = {megabytes:.1f} MB; median of {args.runs} runs")
    print(f"sequential upload_file:   {sequential:7.2f} s  {megabytes / sequential:7.1f} MB/s")
    print(f"storage.publish_dir:      {published:7.2f} s  {megabytes / published:7.1f} MB/s  (parallel, sha256 manifest, markers)")
    print(f"speed-up: {sequential / published:.2f}x; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
