"""benchmarks/bench_gpu.py is run by a person on a rented GPU: its whole path (collators, bf16 autocast, fused AdamW,
MFU bookkeeping) runs here on CPU first, so a refactor that breaks it fails in CI, not on the GPU."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\s*(\d+) (packed|unpacked)\s+(\d+) \|\s+([\d,]+)\s+([\d.,]+)\s+([\d.]+)%\s+(\S+) \|\s+([\d.]+)\s+(\S+)\s+(\w+)$")


def test_the_gpu_benchmark_runs_its_whole_path_in_bf16_on_cpu():
    done = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--cpu-smoke", "--mixed-precision", "bf16"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {(int(m[1]), m[2]): m for line in done.stdout.splitlines() if (m := ROW.match(line))}
    assert sorted(rows) == [(128, "packed"), (128, "unpacked"), (512, "packed"), (512, "unpacked")]
    assert all(m[10] == "bf16" and m[7] == "-" and float(m[4].replace(",", "")) > 0 for m in rows.values())  # no MFU without a GPU peak
    for length in (128, 512):  # packing removes most of the padding the padded layout computes
        assert float(rows[(length, "packed")][6]) < float(rows[(length, "unpacked")][6]) / 3


def test_without_a_gpu_it_says_how_to_check_the_script():
    done = subprocess.run([sys.executable, "benchmarks/bench_gpu.py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "bench_gpu.py needs a CUDA GPU (none visible); run with --cpu-smoke to check the script on CPU"
