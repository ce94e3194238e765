"""Where a training phase runs: in this process, under torchrun (one process per GPU), or as a multi-node TrainJob.

torchrun starts `bertpipe train-phase` with the same arguments in every process;
the trainer reads RANK/WORLD_SIZE, wraps the model in DDP and gives each rank
its own shards. A multi-node phase runs that same command line on every node of
a Kubeflow Trainer TrainJob, and this pod only waits for it.
"""

from __future__ import annotations

import logging
import subprocess

from components.core import storage
from components.core.errors import BertpipeError
from components.core.tracking import Tracking

log = logging.getLogger(__name__)


def command_line(step: str, arguments: dict, tracking: Tracking | None) -> list[str]:
    """`bertpipe <step> --flag value ...`, the inverse of the CLI's signature-generated flags."""
    flags = [step]
    for name, value in arguments.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    if tracking is not None:
        flags += ["--tracking-uri", tracking.tracking_uri, "--experiment", tracking.experiment, "--pipeline-run-id", tracking.pipeline_run_id]
    return flags


def run_phase(arguments: dict, tracking: Tracking, *, processes: int = 1, num_nodes: int = 1, trainjob_template: str = "") -> dict:
    """Train one phase (train_phase's keyword `arguments`) and return its training summary.

    num_nodes > 1: a TrainJob of num_nodes x processes ranks; processes > 1:
    torchrun in this pod; otherwise train_phase in this process.
    """
    command = command_line("train-phase", arguments, tracking)
    if num_nodes > 1:
        from pipelines.trainjob import launch_phase

        if not trainjob_template:
            raise BertpipeError("a multi-node phase needs the TrainJob template compiled in (bertpipe compile --num-nodes N)")
        launch_phase(trainjob_template, pipeline_run_id=tracking.pipeline_run_id, phase=f"phase-{arguments['max_seq_length']}", train_args=command)
    elif processes > 1:
        torchrun = ["torchrun", "--standalone", f"--nproc-per-node={processes}", "--no-python", "bertpipe", *command]
        log.info("starting %d training processes under torchrun", processes)
        finished = subprocess.run(torchrun, check=False)
        if finished.returncode != 0:
            raise BertpipeError(f"torchrun with {processes} processes failed (exit {finished.returncode}); see the ranks' logs above")
    else:
        from components.training.phase import train_phase

        return train_phase(**arguments, tracking=tracking)
    return storage.read_json(storage.join(arguments["output_uri"], "training_summary.json"))
