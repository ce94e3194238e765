"""Run kfp.local's tasks the way a pod sees the world.

kfp.local's SubprocessRunner starts each task with the laptop's whole environment in
the laptop's working directory. A pod has neither: only the environment the compiled
spec gives it (plain `--env` values and Kubernetes secrets), its own empty working
directory and HOME, and the image's install. `pod_like_tasks` swaps kfp.local's
subprocess start for one that gives each task exactly that, and records each task's
executor input (one argv entry: Linux caps it at 128 KiB) so tests can bound it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kfp.local import subprocess_task_handler


@dataclass
class PodLikeTasks:
    """What the tasks were given: their executor input sizes, working folders and exit codes."""

    root: Path
    environment: dict[str, str]
    executor_input_bytes: list[int] = field(default_factory=list)
    workdirs: list[Path] = field(default_factory=list)
    return_codes: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        with self.lock:  # kfp.local runs a ParallelFor's tasks in threads at once
            workdir = self.root / f"task-{len(self.workdirs):03d}"
            (workdir / "home").mkdir(parents=True)
            self.workdirs.append(workdir)
            if "--executor_input" in full_command:
                self.executor_input_bytes.append(len(full_command[full_command.index("--executor_input") + 1].encode()))
        env = {**self.environment, "HOME": str(workdir / "home"), **(env_vars or {})}
        finished = subprocess.run(full_command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        print(finished.stdout, end="")
        with self.lock:
            self.return_codes.append(finished.returncode)
        return finished.returncode


def pod_environment(spec_env: dict[str, str]) -> dict[str, str]:
    """The image's own variables (its PATH, locale; PYTHONPATH when the tests run from a source tree
    instead of the installed package) plus what the compiled spec and its secrets give."""
    base = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get("PYTHONPATH"):
        base["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**base, **spec_env}


def pod_like_tasks(monkeypatch, root: Path, spec_env: dict[str, str]) -> PodLikeTasks:
    """Make every kfp.local task in this test run pod-like; returns the record of what they got."""
    tasks = PodLikeTasks(root, pod_environment(spec_env))
    monkeypatch.setattr(subprocess_task_handler, "run_local_subprocess", tasks.run)
    return tasks
