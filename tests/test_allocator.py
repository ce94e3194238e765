"""bertpipe's processes keep big freed blocks in glibc's heap (components.core.allocator), without
the user setting anything: a 64 MiB block allocated again after a free costs no page faults.

Each probe runs in a fresh interpreter, since the setting is per process and made at import."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = (64 << 20) // 4096

PROBE = """
import ctypes, json, resource
{prelude}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults[1:]))  # the first allocation always faults its pages in
"""

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc")


def run_python(code: str, **env) -> str:
    """`code` in a fresh interpreter, in an environment without allocator settings (plus `env`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "BERTPIPE_MALLOC_TUNING")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def page_faults(prelude: str, **env) -> list[int]:
    return json.loads(run_python(PROBE.format(prelude=prelude), **env))


def test_without_bertpipe_glibc_maps_and_unmaps_every_big_block():
    """The control: the probe sees the page-fault storm that the tuning removes."""
    assert all(faults > PAGES * 0.9 for faults in page_faults(""))


@pytest.mark.parametrize("prelude", ["import components", "import pipelines.cli"])
def test_a_bertpipe_process_reuses_freed_blocks(prelude):
    assert all(faults < PAGES * 0.05 for faults in page_faults(prelude))


def test_the_tuning_can_be_turned_off_and_leaves_user_settings_alone():
    assert all(faults > PAGES * 0.9 for faults in page_faults("import components", BERTPIPE_MALLOC_TUNING="0"))
    assert all(faults > PAGES * 0.9 for faults in page_faults("import components", MALLOC_TRIM_THRESHOLD_="131072"))


def test_the_allocator_is_named_for_logs_and_benchmarks():
    describe = "import components; from components.core import allocator; print(allocator.describe())"
    assert run_python(describe).strip() == "glibc malloc, mmap/trim thresholds 1 GiB (mallopt by bertpipe)"
    assert run_python(describe, BERTPIPE_MALLOC_TUNING="0").strip() == "glibc malloc, defaults"
