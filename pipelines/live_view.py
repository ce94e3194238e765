"""What `bertpipe run` shows while kfp.local runs the pipeline: a line per task, a bar per training phase.

kfp.local prints every task's executor input, its banners and the task's whole
output on stdout, from one thread per running task. Two hooks turn that into
something a person can read, without touching what the tasks themselves do:

- `task_dispatcher.run_single_task_implementation`, which kfp.local calls once
  per task in that task's own thread, is wrapped: the wrapper learns the task's
  component, inputs, status and outputs, and points its thread at a log file;
- sys.stdout, sys.stderr and the root logging handler are replaced for the run
  by `TaskLogs`, which writes each thread's text to its task's log file (the
  rest to pipeline.log).

Training tasks report progress through components.core.progress files, which
a poller thread reads and draws. `verbose=True` keeps kfp.local's own stream
(and still writes the log files).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import os
import re
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from components.core.console import QUIET_THIRD_PARTY
from components.core.progress import PROGRESS_DIR_ENV, read_progress
from pipelines.live_format import bar_line, cause_of, describe_task, duration, key_output, progress_text, warnings_of

TAIL_LINES = 15
SHOWN_WARNINGS = 3  # per task; the rest are in its log
POLL_SECONDS = 0.5
UNANNOUNCED = ("create-shard-",)  # tasks PlainView reports only when they end
QUIET_ENVIRONMENT = {"TQDM_DISABLE": "1", **QUIET_THIRD_PARTY}


@dataclass
class Task:
    name: str
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None
    ok: bool | None = None
    summary: str = ""
    progress: dict | None = None
    reported_quarter: int = 0
    warnings: list[str] = field(default_factory=list)

    def warning_lines(self) -> list[str]:
        """The task's warnings, to print under its line: a warning only in a log file nobody opens does not count."""
        shown = [f"  warning: {text}" for text in self.warnings[:SHOWN_WARNINGS]]
        more = len(self.warnings) - SHOWN_WARNINGS
        return shown + ([f"  ... {more} more warnings in {self.log_path}"] if more > 0 else [])

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The end of the task's own output, without kfp.local's closing banner and traceback underlines."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        kept = [line for line in without_executor_input(text.splitlines()) if line.strip() and not NOISE.match(line)]
        # A traceback says where in the code; the lines before it say what the step was doing.
        start = max((i for i, line in enumerate(kept) if line.strip() == "Traceback (most recent call last):"), default=None)
        kept = (kept[:start][-(lines - 1):] + kept[-1:]) if start is not None else kept[-lines:]
        return [line.strip() for line in kept]


NOISE = re.compile(r"^\s*([\^~]+|-{20,}|[\d:.]+ - \w+ - Task '.*' finished with status \w+)\s*$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def without_executor_input(lines: list[str]) -> list[str]:
    """Drop the JSON block kfp's executor prints after "Got executor_input:" (it ends at the indent it began)."""
    kept, closing, expecting = [], None, False
    for line in lines:
        if expecting and line.strip() == "{":
            closing = line.replace("{", "}")
        elif closing is not None:
            closing = None if line == closing else closing
        elif not line.endswith("Got executor_input:"):
            kept.append(line)
        expecting = line.endswith("Got executor_input:")
    return kept


class TaskLogs(io.TextIOBase):
    """A stand-in for stdout/stderr that sends each thread's text to its current task's log file."""

    def __init__(self, folder: Path, passthrough=None):
        self.folder, self.passthrough = folder, passthrough
        folder.mkdir(parents=True, exist_ok=True)
        self.pipeline_log = open(folder / "pipeline.log", "a", encoding="utf-8")
        self.by_thread: dict[int, object] = {}
        self.lock = threading.Lock()

    def open_task(self, path: Path) -> None:
        self.by_thread[threading.get_ident()] = open(path, "a", encoding="utf-8")

    def close_task(self) -> None:
        handle = self.by_thread.pop(threading.get_ident(), None)
        if handle:
            handle.close()

    def write(self, text: str) -> int:
        handle = self.by_thread.get(threading.get_ident(), self.pipeline_log)
        with self.lock:
            handle.write(ANSI.sub("", text))
            handle.flush()
            if self.passthrough:
                self.passthrough.write(text)
                self.passthrough.flush()
        return len(text)

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        for handle in [self.pipeline_log, *self.by_thread.values()]:
            handle.close()


def terminal_width(stream) -> int:
    try:
        return max(os.get_terminal_size(stream.fileno()).columns, 20)
    except (OSError, ValueError, io.UnsupportedOperation):
        return 80


class PlainView:
    """Short timestamped lines, for CI logs, pods and `> file`: start, end, training progress by quarters."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.RLock()  # task threads and the poller draw

    def say(self, text: str) -> None:
        with self.lock:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.stream.flush()

    def started(self, task: Task) -> None:
        # Shard tasks run many at once and briefly: their end line is enough (a demo run fits a screen).
        if not task.name.startswith(UNANNOUNCED):
            self.say(f"started  {task.name}")

    def finished(self, task: Task) -> None:
        verdict = "finished" if task.ok else "FAILED  "
        self.say(f"{verdict} {task.name} in {duration(task.seconds)}" + (f": {task.summary}" if task.summary else ""))
        for line in task.warning_lines():
            self.say(line)

    def refresh(self, running: list[Task]) -> None:
        for task in running:
            values = task.progress
            if not values or not values.get("max_steps"):
                continue
            quarter = int(4 * values["step"] / values["max_steps"])
            if quarter > task.reported_quarter and quarter < 4:
                task.reported_quarter = quarter
                self.say(f"{task.name}: {progress_text(values)}")

    def close(self) -> None:
        pass


class TerminalView(PlainView):
    """Finished tasks as permanent lines; running tasks and training bars redrawn in place below them."""

    def __init__(self, stream):
        super().__init__(stream)
        self.drawn = 0
        self.shown: list[str] = []
        self.running: list[Task] = []

    def _erase(self) -> str:
        return f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""

    def _draw(self, permanent: list[str]) -> None:
        width = terminal_width(self.stream) - 1
        with self.lock:
            live = [(bar_line(task) if task.progress else f"  … {task.name}  {duration(round(time.monotonic() - task.started))}")[:width]
                    for task in self.running]
            if permanent or live != self.shown:
                self.stream.write(self._erase() + "".join(line + "\n" for line in permanent + live))
                self.stream.flush()
                self.drawn, self.shown = len(live), live

    def started(self, task: Task) -> None:
        with self.lock:
            self.running.append(task)
            self._draw([])

    def finished(self, task: Task) -> None:
        with self.lock:
            self.running = [other for other in self.running if other is not task]
        mark = "✓" if task.ok else "✗"
        lines = [bar_line(task)] if task.progress else []
        lines.append(f"{mark} {task.name:<24} {duration(task.seconds):>7}  {task.summary}".rstrip())
        self._draw(lines + task.warning_lines())

    def refresh(self, running: list[Task]) -> None:
        self._draw([])

    def close(self) -> None:
        self.running = []
        self._draw([])


class LiveRun:
    """Captures a kfp.local pipeline run: per-task logs under `log_folder`, a view of it on `stream`."""

    def __init__(self, log_folder: Path, stream=None, verbose: bool = False):
        self.log_folder, self.stream, self.verbose = Path(log_folder), stream or sys.stdout, verbose
        self.view = None if verbose else (TerminalView if self.stream.isatty() else PlainView)(self.stream)
        self.progress_folder = self.log_folder / "progress"
        self.tasks: list[Task] = []
        self.pipeline_run_id = ""
        self.lock = threading.Lock()
        self.done = threading.Event()

    def failed(self) -> Task | None:
        return next((task for task in self.tasks if task.ok is False), None)

    def _new_task(self, component_name: str, arguments: dict) -> Task:
        with self.lock:
            name = describe_task(component_name, arguments, [task.name for task in self.tasks])
            task = Task(name, self.log_folder / f"{name}.log")
            self.tasks.append(task)
        return task

    def _wrap(self, run_task):
        def run_logged_task(*args, **kwargs):
            self.pipeline_run_id = kwargs.get("unique_pipeline_id", "")
            task = self._new_task(kwargs["component_name"], kwargs.get("arguments") or {})
            self.logs.open_task(task.log_path)
            if self.view:
                self.view.started(task)
            try:
                outputs, status = run_task(*args, **kwargs)
            except BaseException:
                task.seconds, task.ok, task.summary = time.monotonic() - task.started, False, "kfp.local itself failed (see the log)"
                sys.stderr.write(traceback.format_exc())  # still this task's log: kfp.local's thread would lose it
                raise
            finally:
                self.logs.close_task()
            task.seconds, task.ok = time.monotonic() - task.started, status.name == "SUCCESS"
            task.progress = read_progress(self.progress_folder, task.name) if task.ok else task.progress
            task.summary = key_output(task.name, outputs) if task.ok else cause_of(task.tail(200))
            if task.ok and task.log_path.exists():  # a failed task shows the tail of its log instead
                task.warnings = warnings_of(task.log_path.read_text(encoding="utf-8", errors="replace").splitlines())
            if self.view:
                self.view.finished(task)
            return outputs, status

        return run_logged_task

    def _poll(self) -> None:
        while not self.done.wait(POLL_SECONDS):
            running = [task for task in self.tasks if task.ok is None]
            for task in running:
                task.progress = read_progress(self.progress_folder, task.name) or task.progress
            if self.view and running:
                self.view.refresh(running)

    @contextlib.contextmanager
    def capture(self):
        from kfp.local import task_dispatcher

        self.logs = TaskLogs(self.log_folder, passthrough=self.stream if self.verbose else None)
        original_task, root = task_dispatcher.run_single_task_implementation, logging.getLogger()
        # kfp.local indents each task's output by swapping builtins.print, unsafely across its task threads: with
        # tasks in parallel it can leave print indenting after the run (a stray "    " line before the summary).
        original_print = builtins.print
        handlers, environment = root.handlers[:], os.environ.get(PROGRESS_DIR_ENV)
        handler = logging.StreamHandler(self.logs)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.handlers[:] = [handler]
        self.progress_folder.mkdir(parents=True, exist_ok=True)
        os.environ[PROGRESS_DIR_ENV] = str(self.progress_folder)
        # Bars inside the tasks would only fill their log files with carriage returns.
        quiet = {name: os.environ.get(name) for name in QUIET_ENVIRONMENT}
        os.environ.update(QUIET_ENVIRONMENT)
        task_dispatcher.run_single_task_implementation = self._wrap(original_task)
        poller = threading.Thread(target=self._poll, name="bertpipe-live-view", daemon=True)
        poller.start()
        try:
            with contextlib.redirect_stdout(self.logs), contextlib.redirect_stderr(self.logs):
                yield self
        finally:
            self.done.set()
            poller.join()
            task_dispatcher.run_single_task_implementation = original_task
            builtins.print = original_print
            root.handlers[:] = handlers
            for name, value in {PROGRESS_DIR_ENV: environment, **quiet}.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(self.progress_folder, ignore_errors=True)
            if self.view:
                self.view.close()
            self.logs.close()

    def move_logs(self, destination: Path) -> None:
        """Put the logs where the run's other outputs are (the run id is known only once it started)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.log_folder, destination)
        for task in self.tasks:
            task.log_path = destination / task.log_path.name
        self.log_folder = destination

    def failure_lines(self, task: Task) -> list[str]:
        """What a person needs when a task failed: which, why, the end of its log and where the rest is."""
        return [f"last lines of {task.log_path}:", *(f"  {line}" for line in task.tail())]
