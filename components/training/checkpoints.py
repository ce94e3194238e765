"""Training checkpoints: everything needed to continue a phase exactly where it stopped.

    {output_uri}/checkpoints/step-000123/
        model.safetensors   weights (safetensors)
        optimizer.pt        optimizer state (loaded with weights_only=True)
        scheduler.pt        learning-rate schedule state
        rng.pt              torch CPU/CUDA generator states of every rank
        trainer_state.json  step, data position of every rank, settings, loss history
        COMPLETE.json       written last: the checksums of the files above

A checkpoint counts only once COMPLETE.json exists, so a run killed while saving
resumes from the previous one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from components.core import storage
from components.core.errors import BertpipeError

log = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
FOLDER_PATTERN = re.compile(r"step-(\d+)$")


def checkpoint_uri(output_uri: str, step: int) -> str:
    return storage.join(output_uri, "checkpoints", f"step-{step:06d}")


def save(output_uri: str, step: int, *, model, optimizer, scheduler, rng_states: list, trainer_state: dict, scaler=None) -> str:
    """Write a complete checkpoint; the marker goes last. `scaler`: fp16's GradScaler, whose loss scale a resumed
    run must continue from (a fresh one restarts at 65536 and skips steps on overflow until it has backed off)."""
    uri = checkpoint_uri(output_uri, step)
    with storage.staged_dir(uri) as folder:
        save_safetensors_model(model, str(folder / "model.safetensors"))
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        torch.save(rng_states, folder / "rng.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), folder / "scaler.pt")
        storage.write_json(str(folder / "trainer_state.json"), {**trainer_state, "step": step})
        checksums = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}
    storage.write_json(storage.join(uri, MARKER), {"step": step, "sha256": checksums})
    log.info("checkpoint saved: %s", uri)
    return uri


def complete(output_uri: str) -> list[str]:
    """The complete checkpoints under output_uri, oldest first."""
    root = storage.join(output_uri, "checkpoints")
    if not storage.is_s3(root) and not Path(root).is_dir():
        return []
    steps = []
    for path in storage.list_files(root):
        parent, _, name = path.rstrip("/").rpartition("/")
        match = FOLDER_PATTERN.search(parent)
        if name == MARKER and match:
            steps.append((int(match.group(1)), parent))
    return [uri for _, uri in sorted(steps)]


def latest(output_uri: str) -> str | None:
    """The newest complete checkpoint under output_uri, or None."""
    found = complete(output_uri)
    return found[-1] if found else None


def prune(output_uri: str, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (marker first, so a half-deleted one never counts)."""
    for uri in complete(output_uri)[:-keep]:
        storage.delete(storage.join(uri, MARKER))
        for path in storage.list_files(uri):
            storage.delete(path)
        if not storage.is_s3(uri):
            shutil.rmtree(uri, ignore_errors=True)
        log.info("removed old checkpoint %s", uri)


def read_trainer_state(uri: str) -> dict:
    return storage.read_json(storage.join(uri, "trainer_state.json"))


def restore(uri: str, *, model, optimizer, scheduler, scaler=None) -> tuple[dict, list]:
    """Load weights, optimizer, schedule (and fp16's loss scale) from a checkpoint; returns (trainer_state, rng_states)."""
    checksums = storage.read_json(storage.join(uri, MARKER))["sha256"]
    with tempfile.TemporaryDirectory(prefix="bertpipe-ckpt-") as tmp:
        folder = Path(tmp)
        for name, expected in checksums.items():
            data = storage.read_bytes(storage.join(uri, name))
            if hashlib.sha256(data).hexdigest() != expected:
                raise BertpipeError(f"checkpoint file {storage.join(uri, name)} does not match its checksum; delete {uri} to resume from the one before")
            (folder / name).write_bytes(data)
        load_safetensors_model(model, str(folder / "model.safetensors"), strict=True)
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        rng_states = torch.load(folder / "rng.pt", weights_only=True)
        if scaler is not None and (folder / "scaler.pt").exists():
            scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
        state = storage.read_json(str(folder / "trainer_state.json"))
    log.info("resumed from %s (step %d)", uri, state["step"])
    return state, rng_states


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)

