"""The command line every rank of a multi-process phase runs, and starting it under torchrun.

A rank runs `bertpipe train-phase` with the phase's inputs and settings as flags (the
inverse of the flags pipelines/cli_flags.py generates from TrainingSettings) and no launch
flags, so it trains in-process: torchrun here, or torchrun on every node of a TrainJob.
"""

from __future__ import annotations

import logging
import subprocess
import sys

from components.core.errors import BertpipeError
from components.core.settings import describe
from components.core.tracking import Tracking
from components.training.settings import TrainingSettings

log = logging.getLogger(__name__)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def rank_arguments(data_uri: str, vocab_uri: str, output_uri: str, settings: TrainingSettings, tracking: Tracking | None) -> list[str]:
    """`train-phase --data-uri ... --max-steps 100 ...`: what each rank runs (after `bertpipe`)."""
    arguments = ["train-phase", "--data-uri", data_uri, "--vocab-uri", vocab_uri, "--output-uri", output_uri]
    for entry in describe(TrainingSettings):
        value = getattr(settings, entry["name"])
        if isinstance(value, bool):
            arguments.append(_flag(entry["name"]) if value else "--no-" + _flag(entry["name"])[2:])
        else:
            arguments += [_flag(entry["name"]), str(value)]
    # An empty tracking URI tells the rank's CLI to log nowhere, as the launcher was asked.
    tracking_uri = tracking.tracking_uri if tracking else ""
    arguments += ["--tracking-uri", tracking_uri]
    if tracking:
        arguments += ["--experiment", tracking.experiment, "--pipeline-run-id", tracking.pipeline_run_id]
    return arguments


def torchrun_command(arguments: list[str], processes: int) -> list[str]:
    """`torchrun --standalone --nproc-per-node=N` of the bertpipe CLI with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "pipelines.cli", *arguments]


def run_torchrun(arguments: list[str], processes: int) -> None:
    log.info("starting %d training processes under torchrun", processes)
    finished = subprocess.run(torchrun_command(arguments, processes), check=False)
    if finished.returncode != 0:
        raise BertpipeError(f"torchrun with {processes} processes failed (exit {finished.returncode}); see the ranks' logs above")
