"""Live progress of a long step for whoever runs it (`bertpipe run` draws it as a progress bar).

The runner sets BERTPIPE_PROGRESS_DIR; a step then keeps `{dir}/{name}.json`
current with a few numbers (step, max_steps, loss, tokens/s). The file is
replaced atomically, so a reader never sees half of it. Without the variable
(a cluster pod, a test) nothing is written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

PROGRESS_DIR_ENV = "BERTPIPE_PROGRESS_DIR"


class Progress:
    """One step's progress file; the first report's step and time let the reader estimate the time left."""

    def __init__(self, name: str):
        folder = os.environ.get(PROGRESS_DIR_ENV)
        self.path = Path(folder, f"{name}.json") if folder else None
        self.first: tuple[int, float] | None = None

    def update(self, step: int, max_steps: int, **values) -> None:
        if self.path is None:
            return
        now = time.time()
        self.first = self.first or (step, now)
        record = {"step": step, "max_steps": max_steps, "first_step": self.first[0], "first_time": self.first[1], "time": now, **values}
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record), encoding="utf-8")
        os.replace(temporary, self.path)


def read_progress(folder: str | os.PathLike, name: str) -> dict | None:
    """The latest numbers a step reported under `name`, or None before its first report."""
    try:
        return json.loads(Path(folder, f"{name}.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
