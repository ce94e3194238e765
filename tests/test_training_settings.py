"""TrainingSettings and LaunchSettings: their checks, the rank command line (the CLI's own flags,
parsed back to the same settings), and the pipeline parameters that map onto them."""

import inspect
import re

import pytest

from components.core import models
from components.core.errors import BertpipeError
from components.core.recipe import PHASES
from components.core.settings import check, describe, problems
from components.core.tracking import Tracking
from components.training import optimization
from components.training.launch import rank_arguments
from components.training.phase import train_phase
from components.training.settings import MAX_POSITIONS, MODEL_SIZES, OPTIMIZERS, SCHEDULES, LaunchSettings, TrainingSettings
from pipelines.bert_pretraining import bert_pretraining
from pipelines.cli import build_parser
from pipelines.cli_flags import settings_from_args
from tests.instance_factory import make_data, make_vocab


def test_literal_choices_match_the_code_that_uses_them():
    assert MODEL_SIZES == tuple(models.PRESETS)
    assert OPTIMIZERS == optimization.OPTIMIZERS and SCHEDULES == optimization.SCHEDULES
    assert MAX_POSITIONS == models.MAX_POSITION_EMBEDDINGS


def test_every_bad_value_is_reported_at_once():
    bad = TrainingSettings(max_seq_length=1024, per_device_train_batch_size=0, learning_rate=0.0, optimizer="sgd", save_total_limit=-1)
    assert problems(bad) == [
        "max_seq_length=1024: must be at most 512", "per_device_train_batch_size=0: must be at least 1",
        "learning_rate=0.0: must be greater than 0", "optimizer='sgd': must be one of adamw, lamb", "save_total_limit=-1: must be at least 0",
    ]
    with pytest.raises(BertpipeError, match=re.escape("train-phase: num_nodes > 1 needs trainjob_template (compile the pipeline with bertpipe compile --num-nodes N)")):
        check(LaunchSettings(num_nodes=2), "train-phase")


def test_a_warmup_longer_than_the_phase_is_a_warning_not_an_error():
    assert problems(TrainingSettings(max_steps=5)) == []
    assert TrainingSettings(max_steps=5).warnings() == ["warmup_steps=10 is more than max_steps=5: the learning rate never reaches its peak"]
    assert TrainingSettings(max_steps=10).warnings() == []


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


def test_the_rank_command_line_parses_back_to_the_same_settings_and_trains_in_process():
    settings = TrainingSettings(model_size="mini", init_model="s3://b/phase-128/model", max_seq_length=512, max_steps=7, learning_rate=3e-5,
                                adam_epsilon=1e-8, lr_scheduler_type="polynomial", lr_power=0.5, save_steps=3)
    tracking = Tracking("http://mlflow:5000", "exp", "run-1")
    args = parse(rank_arguments("s3://b/data-512", "s3://b/vocab", "s3://b/phase-512", settings, tracking))
    assert settings_from_args(TrainingSettings, args, "train-phase") == settings
    assert settings_from_args(LaunchSettings, args, "train-phase") == LaunchSettings(), "a rank must not launch ranks of its own"
    assert (args.data_uri, args.vocab_uri, args.output_uri) == ("s3://b/data-512", "s3://b/vocab", "s3://b/phase-512")
    assert (args.tracking_uri, args.experiment, args.pipeline_run_id) == ("http://mlflow:5000", "exp", "run-1")
    untracked = parse(rank_arguments("d", "v", "o", settings, None))
    assert untracked.tracking_uri == ""  # the CLI then passes tracking=None


def test_a_torchrun_rank_trains_in_process_whatever_the_launch_says(tmp_path, monkeypatch):
    vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=600)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards={"train": [16], "dev": [8], "test": [8]})
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # set by torchrun in every rank
    summary = train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(max_seq_length=64, max_steps=1, warmup_steps=0, per_device_train_batch_size=4),
                          launch=LaunchSettings(processes=4))
    assert (summary["steps"], summary["world_size"]) == (1, 1)


# Pipeline parameters that feed a training field under another name (the rest share the field's name).
PIPELINE_NAMES = {"init_model": "init_checkpoint", "seed": "train_seed"}
PER_PHASE = {"max_steps": "steps", "per_device_train_batch_size": "batch_size", "learning_rate": "learning_rate",
             "warmup_steps": "warmup_steps", "gradient_accumulation_steps": "gradient_accumulation_steps"}
FROM_RECIPE = {"max_seq_length"}  # PHASES
NOT_IN_PIPELINE = {"per_device_eval_batch_size", "max_eval_batches"}  # validation during training keeps its defaults
PIPELINE_DEFAULTS = {"save_steps": 500}  # a pipeline phase checkpoints as it goes, so a retried task resumes


def test_every_training_setting_is_a_pipeline_parameter():
    parameters = inspect.signature(bert_pretraining.pipeline_func).parameters
    missing = []
    for entry in describe(TrainingSettings):
        name = entry["name"]
        if name in FROM_RECIPE | NOT_IN_PIPELINE:
            continue
        if name in PER_PHASE:
            names = [f"phase{phase.number}_{PER_PHASE[name]}" for phase in PHASES]
        else:
            names = [PIPELINE_NAMES.get(name, name)]
        missing += [n for n in names if n not in parameters or parameters[n].annotation is not entry["type"]]
        if name not in PER_PHASE and name not in PIPELINE_NAMES and name in parameters:
            assert parameters[name].default == PIPELINE_DEFAULTS.get(name, entry["default"]), name
    assert missing == []
