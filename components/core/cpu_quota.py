"""Thread pools sized to the pod's CPU limit, not the node's cores (applied when `components` is first imported).

torch (OpenMP), tokenizers (Rayon) and numba size their thread pools by the CPUs they can see,
and on a Kubernetes node that is every core of the machine, whatever the pod's CPU limit: a pod
limited to 4 CPUs on a 64-core node runs 64 threads, spends its CFS quota in a fraction of each
period and then stalls until the next. Reading the cgroup's quota (v2 `cpu.max`, v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`) and exporting the pools' sizes before those libraries
load keeps them within it. Variables the user set are left alone; without a quota nothing is set.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
POOL_VARIABLES = ("OMP_NUM_THREADS", "RAYON_NUM_THREADS", "NUMBA_NUM_THREADS")  # torch and MKL, tokenizers, numba


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def quota_cpus(root: str = CGROUP_ROOT) -> float | None:
    """The CPUs this cgroup may use per period (2.5 for "250000 100000"), or None when it has no quota."""
    v2 = _read(Path(root) / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" or not period else int(quota) / int(period)
    quota, period = (_read(Path(root) / "cpu" / name) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
    if quota is None or period is None or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def fit_thread_pools(root: str = CGROUP_ROOT) -> int | None:
    """Export POOL_VARIABLES as the quota's whole CPUs (at least 1) where it is below the CPUs visible; returns that
    count, or None when there is no quota to fit."""
    quota = quota_cpus(root)
    if quota is None or quota >= len(os.sched_getaffinity(0)):
        return None
    threads = max(1, math.floor(quota))
    for name in POOL_VARIABLES:
        os.environ.setdefault(name, str(threads))
    return threads
