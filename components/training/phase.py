"""The train-phase step: one phase of BERT pretraining (MLM + NSP) on one sequence length.

Phase 512 is the same step with init_model = phase 128's model folder: its weights,
a fresh optimizer and schedule (Google's recipe). Output:

    {output_uri}/model/                 BertForPreTraining (safetensors) + tokenizer + vocab_info.json
    {output_uri}/training_summary.json
    {output_uri}/plots/loss_curve.png
    {output_uri}/checkpoints/step-N/    resumable checkpoints (see components.training.checkpoints)

A rerun with the same output_uri resumes from the newest complete checkpoint. `train_phase`
is the one entry: `bertpipe train-phase` and the KFP component call it, and it decides where
the phase runs (LaunchSettings). Every rank ends in components.training.trainer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from components.core import storage
from components.core.errors import BertpipeError
from components.core.settings import check
from components.core.tracking import Tracking
from components.training import distributed, trainjob
from components.training.launch import rank_arguments, run_torchrun
from components.training.settings import LaunchSettings, TrainingSettings
from components.training.trainer import PhaseRun

log = logging.getLogger(__name__)


def train_phase(data_uri: str, vocab_uri: str, output_uri: str, *, settings: TrainingSettings = TrainingSettings(),
                launch: LaunchSettings = LaunchSettings(), tracking: Tracking | None = None) -> dict:
    """Train one phase and publish {output_uri}/model; returns the training summary (incl. "model_uri").

    launch.processes > 1 runs torchrun with one process per GPU here; launch.num_nodes > 1 a
    TrainJob of num_nodes x processes ranks, which this process waits for. A process that is
    already a torchrun rank trains in-process whatever `launch` says.
    """
    check(settings, "train-phase")
    check(launch, "train-phase")
    done = finished_phase(data_uri, vocab_uri, output_uri, settings)
    if done:
        log.info("reused the finished phase at %s: its model is complete and verified, trained %d steps with the same data and settings", output_uri, done["steps"])
        return {**done, "reused": True}
    storage.check_output(output_uri)  # before the data, the model and the hours of training
    for warning in settings.warnings():
        log.warning("train-phase: %s", warning)
    if distributed.is_rank() or (launch.processes == 1 and launch.num_nodes == 1):
        return PhaseRun(data_uri, vocab_uri, output_uri, settings, tracking).run()
    arguments = rank_arguments(data_uri, vocab_uri, output_uri, settings, tracking)
    if launch.num_nodes > 1:
        trainjob.launch_phase(launch.trainjob_template, output_uri=output_uri, phase=f"phase-{settings.max_seq_length}", train_args=arguments)
    else:
        run_torchrun(arguments, launch.processes)
    return storage.read_json(storage.join(output_uri, "training_summary.json"))


def finished_phase(data_uri: str, vocab_uri: str, output_uri: str, settings: TrainingSettings) -> dict | None:
    """The summary of a phase that already finished at output_uri with this data, vocab and settings, its model
    complete and every file verified (a resumed pipeline run skips it); None when it must (still) train."""
    summary_uri = storage.join(output_uri, "training_summary.json")
    try:
        summary = storage.read_json(summary_uri) if storage.exists(summary_uri) else None
        if not summary:
            return None
        wanted = {"data_uri": data_uri, "vocab_uri": vocab_uri, **asdict(settings)}
        if summary.get("steps") != settings.max_steps or any(summary["settings"].get(name) != value for name, value in wanted.items()):
            return None
        storage.read_published(summary["model_uri"])  # refuses a model folder that is absent or half-written
        with storage.local_dir(summary["model_uri"]):  # verifies every file's checksum
            return summary
    except (BertpipeError, KeyError, ValueError):
        return None
