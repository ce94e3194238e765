"""glibc malloc tuning, applied when `components` is first imported (before torch allocates).

Under glibc's defaults every block of 32 MiB or more (embedding gradients, activations, logits
of a full-vocab model) is mmap'd and munmap'd again on free, so each training step page-faults
its big tensors afresh: measured on the tiny preset with the 30k vocab, 2.5x slower with 15x the
system time. Raising the mmap and trim thresholds to 1 GiB keeps freed blocks in the heap for the
next step. Users set nothing: the CLI, every KFP component and the torchrun ranks import
`components` first. Set BERTPIPE_MALLOC_TUNING=0 to keep glibc's defaults (benchmarks compare
the two); MALLOC_* variables the user set, or another allocator preloaded, are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_applied = False


def tune() -> bool:
    """Raise glibc's mmap/trim thresholds (once per process); False where it does not apply."""
    global _applied
    if _applied:
        return True
    if os.environ.get("BERTPIPE_MALLOC_TUNING", "1") == "0" or any(name in os.environ for name in _USER_SETTINGS):
        return False
    if "jemalloc" in os.environ.get("LD_PRELOAD", "") or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, THRESHOLD))
    return _applied


def describe() -> str:
    """Which allocator settings this process runs with, for benchmark and log lines."""
    preloaded = os.environ.get("LD_PRELOAD", "")
    if preloaded:
        return f"LD_PRELOAD={preloaded}"
    user = {name: os.environ[name] for name in _USER_SETTINGS if name in os.environ}
    if user:
        return "glibc malloc with " + ", ".join(f"{k}={v}" for k, v in user.items())
    if _applied:
        return f"glibc malloc, mmap/trim thresholds {THRESHOLD >> 30} GiB (mallopt by bertpipe)"
    return "glibc malloc, defaults"
