"""The words of the live view: task names, each task's key output, failure causes, durations and bars.

kfp.local names a task after its component ("train-phase-2", "create-pretraining-shard"
for every shard); the view names it after what it does ("train-phase-512",
"create-shard-128-3"), from the task's own inputs.
"""

from __future__ import annotations

import json
import re

NAMES = {"plan-pretraining-data": "plan-shards", "create-pretraining-shard": "create-shard", "create-pretraining-data": "merge-manifest"}
# "components.core.errors.BertpipeError: corpus x is empty" -> the message; any other exception keeps its type.
WARNING_LINE = re.compile(r"^\d\d:\d\d:\d\d WARNING components\.[\w.]+: (.*)$")
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Interrupt))(?::\s*(.*))?$")


def sequence_length(arguments: dict) -> int | None:
    if arguments.get("max_seq_length"):
        return int(arguments["max_seq_length"])
    work = arguments.get("work") or next(iter(arguments.get("plan") or []), None)
    folder = getattr(arguments.get("data_folder"), "metadata", None) or {}  # shard and merge tasks: the content-keyed data folder
    match = re.search(r"data-(\d+)(-[0-9a-f]+)?$", str(folder.get("uri") or (work or {}).get("output_uri", "")))
    return int(match.group(1)) if match else None


def describe_task(component_name: str, arguments: dict, taken: list[str]) -> str:
    """A unique, telling name for a task: the component's name, its sequence length, a count for repeats."""
    base = re.sub(r"-\d+$", "", component_name.removeprefix("comp-"))
    name = NAMES.get(base, base)
    length = sequence_length(arguments)
    name = f"{name}-{length}" if length else name
    if name in taken or base == "create-pretraining-shard":
        name = f"{name}-{sum(other.startswith(name + '-') or other == name for other in taken) + 1}"
    return name


def _metadata(outputs: dict, name: str) -> dict:
    return getattr(outputs.get(name), "metadata", None) or {}


def _count(value) -> str:
    return f"{int(value):,}"


def key_output(task_name: str, outputs: dict) -> str:
    """The one thing worth seeing from a finished task: tokens, shards, instances, final loss, accuracy, version;
    "(reused)" when the task found its output already made (vocab, data, a finished phase)."""
    text = _key_output(task_name, outputs)
    return f"{text} (reused)" if any(_metadata(outputs, name).get("reused") for name in ("vocab", "data", "model")) else text


def _key_output(task_name: str, outputs: dict) -> str:
    value = outputs.get("Output")
    if task_name == "export-vocab":
        return f"{_count(_metadata(outputs, 'vocab').get('size', 0))} tokens"
    if task_name.startswith("plan-shards"):
        return f"{len(value or [])} shards"
    if task_name.startswith("create-shard") and isinstance(value, dict):
        return f"{_count(value.get('num_instances', 0))} {value.get('split', '')} instances".replace("  ", " ")
    if task_name.startswith("merge-manifest"):
        counts = _metadata(outputs, "data")
        return ", ".join(f"{split} {_count(counts[f'{split}_instances'])}" for split in ("train", "dev", "test") if f"{split}_instances" in counts) + " instances"
    if task_name.startswith("train-phase"):
        summary = _metadata(outputs, "model")
        loss, rate = summary.get("final_loss"), summary.get("tokens_per_second")
        return f"{_count(summary.get('steps', 0))} steps" + (f", final loss {loss:.3f}" if loss is not None else "") + (f", {_count(rate)} tokens/s" if rate else "")
    if task_name == "evaluate":
        metrics = _metadata(outputs, "metrics")
        if not metrics and isinstance(value, str) and value.startswith("{"):
            metrics = json.loads(value).get("challenger", {})
        # The [MASK]-only accuracy beside its trivial rate: the one figure that says whether the model learned from context.
        return ", ".join(f"at [MASK] {length} {metrics[f'mlm_accuracy_at_mask_{length}']:.3f}"
                         + (f" (trivial {metrics[baseline]:.3f})" if (baseline := f"most_frequent_token_accuracy_at_mask_{length}") in metrics else "")
                         for length in (128, 512) if f"mlm_accuracy_at_mask_{length}" in metrics)
    if task_name == "register-model" and isinstance(value, str):
        return _registration(value)
    if task_name == "probe" and isinstance(value, str):
        return _probe(value)
    return ""


def _probe(folder: str) -> str:
    """The probe task returns its folder; the accuracies are in its probe.json (components.evaluation.probe)."""
    from components.core import storage
    from components.core.errors import BertpipeError
    from components.core.metric_names import PROBE_FILE

    try:
        result = storage.read_json(storage.join(folder, PROBE_FILE))
    except (BertpipeError, OSError, ValueError):  # a summary line never fails the run
        return ""
    if result.get("skipped"):
        return "skipped (no probe dataset)"
    challenger, champion = result.get("challenger") or {}, result.get("champion") or {}
    if "accuracy" not in challenger:
        return ""
    text = f"accuracy {challenger['accuracy']:.3f}" + (f" (majority class {result['majority_rate']:.3f})" if "majority_rate" in result else "")
    return text + (f", champion {champion['accuracy']:.3f}" if "accuracy" in champion else "")


def _registration(value: str) -> str:
    """The task returns the registration as JSON: say which version and what the promotion decided."""
    if not value.startswith("{"):
        return f"registered {value}"
    result = json.loads(value)
    decision = (result.get("promotion") or {}).get("decision", "")
    verdict = {"promoted": "champion", "kept": "not champion", "conflict": "promotion conflict"}.get(decision, decision)
    return f"registered {result.get('name')} version {result.get('version')}" + (f", {verdict}" if verdict else "")


def warnings_of(log_lines: list[str]) -> list[str]:
    """The product's own warnings in a task's log (its components.* loggers; third-party chatter stays in the log)."""
    return [match.group(1) for match in map(WARNING_LINE.match, log_lines) if match]


def cause_of(log_lines: list[str]) -> str:
    """The step's own one-line error from the end of its log (the traceback's last line), or a pointer to the log."""
    for line in reversed(log_lines):
        match = ERROR_LINE.match(line)
        if match:
            kind, message = match.groups()
            return message if kind == "BertpipeError" and message else f"{kind}: {message}" if message else kind
    return "it exited with an error (see its log)"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def time_left(values: dict) -> float | None:
    """Seconds left at the rate seen so far (from the first report, so model loading does not count)."""
    step, first = values.get("step", 0), values.get("first_step", 0)
    elapsed = values.get("time", 0) - values.get("first_time", values.get("time", 0))
    if step <= first or elapsed <= 0:
        return None
    return (values["max_steps"] - step) * elapsed / (step - first)


def progress_text(values: dict) -> str:
    step, total = values.get("step", 0), values.get("max_steps", 0)
    parts = [f"step {step}/{total}"]
    if values.get("loss") is not None:
        parts.append(f"loss {values['loss']:.3f}")
    if values.get("tokens_per_second"):
        parts.append(f"{_count(values['tokens_per_second'])} tok/s")
    left = time_left(values)
    if left is not None and step < total:
        parts.append(f"{duration(left)} left")
    return ", ".join(parts)


def bar_line(task) -> str:
    values = task.progress or {}
    total = values.get("max_steps") or 1
    done = min(values.get("step", 0) / total, 1.0)
    cells = 20
    filled = int(done * cells)
    return f"  {task.name:<16} [{'#' * filled}{'-' * (cells - filled)}] {done:4.0%}  {progress_text(values)}"
