"""Reuse and resume through `bertpipe run`: unchanged vocab and data are reused by later runs, and a run killed
in phase 512 after phase 128 finished, resumed with --resume, ends with the weights of a run never killed."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from components.training import checkpoints
from pipelines.local_run import run_pipeline_locally, summary_lines
from tests.test_pipeline_local import TINY

SETTINGS = {**TINY, "phase2_steps": 40, "save_steps": 4, "probe_dataset": ""}


def _flags(arguments: dict) -> list[str]:
    flags = []
    for name, value in arguments.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [f"{flag}={value}"]
    return flags


def _run_folders(root: Path) -> set[str]:
    return {path.name for path in (root / "artifacts" / "runs").iterdir()} if (root / "artifacts" / "runs").is_dir() else set()


def _killed_in_phase_512(arguments: dict, root: Path, known: set[str]) -> str:
    """`bertpipe run` in its own process group, killed (SIGKILL, every task with it) once phase 512 saved a checkpoint; its run id."""
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", *_flags(arguments), "--kfp-root", str(root / "kfp-root")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and process.poll() is None:
            new = _run_folders(root) - known
            if new and checkpoints.complete(str(root / "artifacts" / "runs" / next(iter(new)) / "phase-512")):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before phase 512 saved a checkpoint"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (run_id,) = _run_folders(root) - known
    return run_id


def _weights(model_uri: str) -> dict:
    return load_file(str(Path(model_uri, "model.safetensors")))


@pytest.mark.slow  # three tiny pipeline runs
def test_reuse_and_resume(tmp_path):
    arguments = {**SETTINGS, "artifact_root": str(tmp_path / "artifacts"), "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                 "experiment": "resume-test", "registered_model_name": "resume-test"}
    started = time.perf_counter()
    uninterrupted = run_pipeline_locally(arguments, str(tmp_path / "kfp-root"), stream=io.StringIO())
    first_seconds = time.perf_counter() - started
    cache = tmp_path / "artifacts" / "cache"
    assert sorted(path.name.rsplit("-", 1)[0] for path in cache.iterdir()) == ["data-128", "data-512", "vocab"]
    made = {path: path.stat().st_mtime_ns for path in cache.rglob("*") if path.is_file()}
    assert "reused" not in "\n".join(summary_lines(uninterrupted, arguments))

    killed = _killed_in_phase_512(arguments, tmp_path, _run_folders(tmp_path))
    folder = tmp_path / "artifacts" / "runs" / killed
    assert (folder / "phase-128" / "model" / "model.safetensors").is_file() and not (folder / "phase-512" / "model").exists()

    started = time.perf_counter()
    resumed = run_pipeline_locally({**arguments, "resume_run_id": killed}, str(tmp_path / "kfp-root"), stream=io.StringIO())
    print(f"first run {first_seconds:.0f} s; resumed run {time.perf_counter() - started:.0f} s")
    lines = summary_lines(resumed, arguments)
    assert "reused:            vocab, data-128, data-512, phase-128 (complete and verified, same inputs and settings)" in lines
    assert any(line.startswith("resumed:           phase-512 from ") and str(folder / "phase-512" / "checkpoints") in line for line in lines)
    assert resumed["model_uri"] == str(folder / "phase-512" / "model")
    # Nothing was made again: the cache folders are the first run's, untouched, and no new one appeared.
    assert {path: path.stat().st_mtime_ns for path in cache.rglob("*") if path.is_file()} == made
    assert "reused the finished phase" in Path(resumed["logs"], "train-phase-128.log").read_text()
    # Phase 512 went on from its checkpoint and ended exactly where the uninterrupted run did.
    expected, got = _weights(uninterrupted["model_uri"]), _weights(resumed["model_uri"])
    assert expected.keys() == got.keys() and all((expected[name] == got[name]).all() for name in expected)
    assert resumed["metrics"] == uninterrupted["metrics"]


def test_an_unknown_run_is_refused_before_anything_starts(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--resume", "no-such-run", "--artifact-root", str(tmp_path / "artifacts"),
                             "--kfp-root", str(tmp_path / "kfp"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("bertpipe: error: no run 'no-such-run' to resume under ")
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "kfp").exists()
