"""The live view of `bertpipe run`: task names and key outputs, logs routed per task, terminal and plain output, failures."""

import builtins
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path


from pipelines.live_format import cause_of, describe_task, duration, key_output, progress_text, warnings_of
from pipelines.live_view import LiveRun, PlainView, Task, TaskLogs, TerminalView


def test_tasks_are_named_after_what_they_do():
    taken = []
    for component, arguments in [
        ("comp-export-vocab", {}),
        ("comp-plan-pretraining-data", {"max_seq_length": 128.0}),
        ("comp-create-pretraining-shard", {"work": {"output_uri": "/a/runs/7/data-128"}}),
        ("comp-create-pretraining-shard", {"work": {"output_uri": "/a/runs/7/data-128"}}),
        ("comp-create-pretraining-data", {"plan": [{"output_uri": "s3://b/runs/7/data-512"}]}),
        ("comp-train-phase-2", {"max_seq_length": 512}),
        ("comp-evaluate", {}),
        ("comp-evaluate", {}),
    ]:
        taken.append(describe_task(component, arguments, taken))
    assert taken == ["export-vocab", "plan-shards-128", "create-shard-128-1", "create-shard-128-2", "merge-manifest-512",
                     "train-phase-512", "evaluate", "evaluate-2"]


class Artifact:
    def __init__(self, **metadata):
        self.metadata = metadata


def test_key_outputs_say_the_one_thing_worth_seeing():
    assert key_output("export-vocab", {"vocab": Artifact(size=4000.0)}) == "4,000 tokens"
    assert key_output("plan-shards-128", {"Output": [{}, {}, {}]}) == "3 shards"
    assert key_output("merge-manifest-128", {"data": Artifact(train_instances=12000.0, dev_instances=600.0, test_instances=580.0)}) == \
        "train 12,000, dev 600, test 580 instances"
    assert key_output("train-phase-128", {"model": Artifact(steps=900.0, final_loss=5.4321, tokens_per_second=14731.2)}) == \
        "900 steps, final loss 5.432, 14,731 tokens/s"
    metrics = Artifact(mlm_accuracy_128=0.3, mlm_accuracy_at_mask_128=0.2, most_frequent_token_accuracy_at_mask_128=0.057, mlm_accuracy_at_mask_512=0.19)
    assert key_output("evaluate", {"metrics": metrics}) == "at [MASK] 128 0.200 (trivial 0.057), at [MASK] 512 0.190"
    assert key_output("register-model", {"Output": "bert-pretraining/3"}) == "registered bert-pretraining/3"
    registration = {"name": "bert-pretraining", "version": "3", "model_uri": "models:/bert-pretraining/3", "promotion": {"decision": "kept", "reasons": ["..."]}}
    assert key_output("register-model", {"Output": json.dumps(registration)}) == "registered bert-pretraining version 3, not champion"
    registration["promotion"]["decision"] = "promoted"
    assert key_output("register-model", {"Output": json.dumps(registration)}) == "registered bert-pretraining version 3, champion"


def test_the_probe_says_its_accuracy_beside_the_majority_class_and_the_champion(tmp_path):
    result = {"dataset": "demo", "majority_rate": 0.2945205, "challenger": {"accuracy": 0.9726}, "champion": None}
    (tmp_path / "probe.json").write_text(json.dumps(result))
    assert key_output("probe", {"Output": str(tmp_path)}) == "accuracy 0.973 (majority class 0.295)"
    (tmp_path / "probe.json").write_text(json.dumps({**result, "champion": {"accuracy": 0.9521}}))
    assert key_output("probe", {"Output": str(tmp_path)}) == "accuracy 0.973 (majority class 0.295), champion 0.952"
    (tmp_path / "probe.json").write_text(json.dumps({"dataset": "", "skipped": True, "challenger": None, "champion": None}))
    assert key_output("probe", {"Output": str(tmp_path)}) == "skipped (no probe dataset)"
    assert key_output("probe", {"Output": str(tmp_path / "missing")}) == ""


def test_the_cause_is_the_steps_own_one_line_error():
    assert cause_of(["x", "components.core.errors.BertpipeError: corpus c is empty", "---"]) == "corpus c is empty"
    assert cause_of(["Traceback (most recent call last):", "ValueError: bad value"]) == "ValueError: bad value"
    assert cause_of(["KeyboardInterrupt"]) == "KeyboardInterrupt"
    assert cause_of(["nothing to see"]) == "it exited with an error (see its log)"


def test_durations_and_progress_read_like_a_person_wrote_them():
    assert [duration(s) for s in (3.25, 75, 3725)] == ["3.2s", "1m15s", "1h02m"]
    values = {"step": 300, "max_steps": 900, "loss": 6.1234, "tokens_per_second": 14000.4, "first_step": 0, "first_time": 100.0, "time": 160.0}
    assert progress_text(values) == "step 300/900, loss 6.123, 14,000 tok/s, 2m00s left"


def test_each_threads_output_goes_to_its_tasks_log(tmp_path):
    logs = TaskLogs(tmp_path)

    def task(name):
        logs.open_task(tmp_path / f"{name}.log")
        for line in range(50):
            logs.write(f"{name} line {line}\n")
        logs.close_task()

    threads = [threading.Thread(target=task, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    logs.write("\x1b[96mbetween tasks\x1b[0m\n")
    for thread in threads:
        thread.join()
    logs.close()
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.log").read_text().splitlines() == [f"{name} line {i}" for i in range(50)]
    assert (tmp_path / "pipeline.log").read_text() == "between tasks\n"


def test_the_tail_skips_the_executor_input_and_the_traceback(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("\n".join([
        "    [KFP Executor 2026 INFO]: Got executor_input:", "    {", '        "inputs": {}', "    }",
        "    12:00:00 INFO step: reading the corpus", "    Traceback (most recent call last):", '      File "x.py", line 1', "        ^^^^",
        "    components.core.errors.BertpipeError: corpus c is empty",
        "12:00:01.000 - ERROR - Task 'export-vocab' finished with status FAILURE", "-" * 80,
    ]))
    assert Task("t", log).tail() == ["12:00:00 INFO step: reading the corpus", "components.core.errors.BertpipeError: corpus c is empty"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_print_is_itself_again_after_kfp_locals_parallel_tasks_leave_it_indenting(tmp_path):
    from kfp.local import logging_utils

    real_print = builtins.print
    with LiveRun(tmp_path / "logs", stream=io.StringIO()).capture():
        first, second = logging_utils.indented_print(), logging_utils.indented_print()
        first.__enter__(), second.__enter__()  # two task threads start, then end in the same order
        first.__exit__(None, None, None), second.__exit__(None, None, None)
        assert builtins.print is not real_print  # kfp.local's leak: the second restored the first's indenter
    assert builtins.print is real_print


def test_terminal_view_redraws_running_tasks_below_finished_ones():
    screen = Terminal()
    view = TerminalView(screen)
    first, second = Task("create-shard-128-1", Path("a")), Task("create-shard-128-2", Path("b"))
    view.started(first)
    view.started(second)
    first.seconds, first.ok, first.summary = 2.0, True, "180 train instances"
    view.finished(first)
    text = screen.getvalue()
    assert text.count("\x1b[1F\x1b[J") == 1 and text.count("\x1b[2F\x1b[J") == 1  # each redraw erases what it drew
    assert re.search(r"\x1b\[2F\x1b\[J✓ create-shard-128-1 +2\.0s  180 train instances\n  … create-shard-128-2  [\d.]+s\n$", text)
    view.close()
    assert screen.getvalue().endswith("\x1b[1F\x1b[J")


def test_a_bar_is_redrawn_only_when_it_changes():
    screen = Terminal()
    view = TerminalView(screen)
    task = Task("train-phase-128", Path("x"), progress={"step": 30, "max_steps": 60, "loss": 7.5})
    view.started(task)
    drawn = screen.getvalue()
    assert drawn == "  train-phase-128  [##########----------]  50%  step 30/60, loss 7.500\n"
    view.refresh([task])
    assert screen.getvalue() == drawn
    task.progress = {"step": 45, "max_steps": 60, "loss": 7.25}
    view.refresh([task])
    assert screen.getvalue() == drawn + "\x1b[1F\x1b[J  train-phase-128  [###############-----]  75%  step 45/60, loss 7.250\n"


def test_plain_view_reports_training_by_quarters():
    out = io.StringIO()
    view = PlainView(out)
    task = Task("train-phase-128", Path("x"))
    for step in range(0, 61, 5):
        task.progress = {"step": step, "max_steps": 60, "loss": 7.0, "first_step": 0, "first_time": 0.0, "time": float(step)}
        view.refresh([task])
    steps = [int(re.search(r"step (\d+)/60", line).group(1)) for line in out.getvalue().splitlines()]
    assert steps == [15, 30, 45]


def test_plain_view_announces_shard_tasks_only_when_they_end():
    out = io.StringIO()
    view = PlainView(out)
    shard, merge = Task("create-shard-128-1", Path("a")), Task("merge-manifest-128", Path("b"))
    view.started(shard)
    view.started(merge)
    shard.seconds, shard.ok = 2.0, True
    view.finished(shard)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == ["started  merge-manifest-128", "finished create-shard-128-1 in 2.0s"]


def run_failing_pipeline(tmp_path, **streams):
    """A run whose export-vocab task fails (a vocab.txt with a repeated line: every check before the run passes)."""
    source = tmp_path / "repeating-vocab"
    source.mkdir()
    (source / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "the"]) + "\n")
    command = [sys.executable, "-m", "pipelines.cli", "run", "--artifact-root", str(tmp_path / "artifacts"),
               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--vocab-source", str(source)]
    return subprocess.Popen(command, env={**os.environ, "COLUMNS": "100"}, **streams)


def test_a_failed_task_is_named_with_its_cause_log_tail_and_log_path(tmp_path):
    process = run_failing_pipeline(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 2
    log = next((tmp_path / "artifacts" / "runs").glob("*/logs/export-vocab.log"))
    cause = f"vocab from {tmp_path / 'repeating-vocab'} repeats tokens; every line of vocab.txt must be unique"
    assert stderr.splitlines() == [f"bertpipe: error: the pipeline failed in export-vocab: {cause} (full log: {log})"]
    lines = stdout.splitlines()
    failed = next(index for index, line in enumerate(lines) if " FAILED " in line)  # after the run's first tasks (fingerprint, resolve)
    assert re.fullmatch(r"[\d:]{8} FAILED   export-vocab in [\d.]+s: " + re.escape(cause), lines[failed])
    assert f"last lines of {log}:" in lines[failed + 1:]  # independent tasks (resolve-run) may still start after the failure
    assert lines[-1] == f"  components.core.errors.BertpipeError: {cause}"
    assert len(lines) <= 20 and "executor_input" not in stdout.replace("Got executor_input:", "")
    assert "Traceback (most recent call last):" in log.read_text()  # the whole story stays in the log


def test_a_terminal_gets_marks_and_redraws(tmp_path):
    import pty

    leader, follower = pty.openpty()
    process = run_failing_pipeline(tmp_path, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=300) == 2
    screen = b"".join(chunks).decode()
    assert "✗ export-vocab" in screen and "\x1b[1F\x1b[J" in screen
    assert "bertpipe: error: the pipeline failed in export-vocab" in screen


def test_the_products_warnings_are_shown_under_their_task_and_capped(tmp_path):
    log_lines = [
        "01:02:03 INFO components.data.merge: pretraining data at x",
        "01:02:03 WARNING components.data.merge: 3 words longer than 200 characters became one [UNK] each",
        "01:02:04 WARNING huggingface_hub.repocard: Repo card metadata block was not found.",
        *[f"01:02:05 WARNING components.training.phase: train-phase: warning {i}" for i in range(4)],
    ]
    assert warnings_of(log_lines) == ["3 words longer than 200 characters became one [UNK] each", *[f"train-phase: warning {i}" for i in range(4)]]
    task = Task("merge-manifest-128", tmp_path / "merge.log", seconds=1.0, ok=True, summary="train 14 instances", warnings=warnings_of(log_lines))
    out = io.StringIO()
    PlainView(out).finished(task)
    assert [line[9:] for line in out.getvalue().splitlines()] == [
        "finished merge-manifest-128 in 1.0s: train 14 instances",
        "  warning: 3 words longer than 200 characters became one [UNK] each",
        "  warning: train-phase: warning 0",
        "  warning: train-phase: warning 1",
        f"  ... 2 more warnings in {tmp_path / 'merge.log'}",
    ]
    screen = Terminal()
    TerminalView(screen).finished(Task("evaluate", tmp_path / "e.log", seconds=2.0, ok=True, warnings=["probe: 57 of 800 texts were truncated"]))
    assert screen.getvalue() == "✓ evaluate                    2.0s\n  warning: probe: 57 of 800 texts were truncated\n"
