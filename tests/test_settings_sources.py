"""Each setting has one home, its step's settings dataclass: the KFP components (which need
literal signatures) and the CLI must agree with it on names, types and defaults."""

import dataclasses
import inspect

import pytest

from components.core import settings as settings_core
from components.core.corpus import CorpusSettings
from components.core.recipe import PHASES
from components.data.settings import DataSettings
from components.evaluation.settings import EvaluationSettings, ProbeSettings
from components.registry.settings import PromotionSettings
from components.training.settings import LaunchSettings, TrainingSettings
from components.vocab.settings import VocabSettings
from pipelines import kfp_components
from pipelines.bert_pretraining import bert_pretraining, pretraining_data
from pipelines.cli import build_parser
from pipelines.parameters import HELP, help_for
from pipelines.pipeline_parameters import settings_classes, source_of

# (KFP component or pipeline, its settings dataclass): every field is a parameter of the component.
COMPONENT_SETTINGS = [
    (kfp_components.export_vocab, VocabSettings),
    (kfp_components.export_vocab, CorpusSettings),
    (kfp_components.plan_pretraining_data, CorpusSettings),
    (kfp_components.plan_pretraining_data, DataSettings),
    (kfp_components.train_phase, TrainingSettings),
    (kfp_components.train_phase, LaunchSettings),
    (kfp_components.evaluate, EvaluationSettings),
    (kfp_components.register_model, PromotionSettings),
    (kfp_components.probe, ProbeSettings),
]
# (pipeline, settings dataclass): the pipeline's parameters of that step.
PIPELINE_SETTINGS = [
    (bert_pretraining, PromotionSettings),
    (bert_pretraining, CorpusSettings),
    (pretraining_data, DataSettings),
    (pretraining_data, CorpusSettings),
]


def signature_mismatches(function, settings_cls) -> list[str]:
    parameters = inspect.signature(function).parameters
    found = []
    for entry in settings_core.describe(settings_cls):
        parameter = parameters.get(entry["name"])
        if parameter is None:
            found.append(f"{entry['name']}: missing")
            continue
        if parameter.annotation is not entry["type"]:
            found.append(f"{entry['name']}: type {parameter.annotation} != {entry['type']}")
        if parameter.default != entry["default"] and entry["default"] is not dataclasses.MISSING:
            found.append(f"{entry['name']}: default {parameter.default!r} != {entry['default']!r}")
    return found


@pytest.mark.parametrize("component,settings_cls", COMPONENT_SETTINGS, ids=lambda v: getattr(v, "__name__", getattr(v, "name", "")))
def test_component_signature_matches_its_settings(component, settings_cls):
    assert signature_mismatches(component.python_func, settings_cls) == []


@pytest.mark.parametrize("pipeline,settings_cls", PIPELINE_SETTINGS, ids=lambda v: getattr(v, "__name__", getattr(v, "name", "")))
def test_pipeline_signature_matches_its_settings(pipeline, settings_cls):
    assert signature_mismatches(pipeline.pipeline_func, settings_cls) == []


def test_the_check_catches_a_drifted_signature():
    def drifted(vocab_size: float = 8000, lowercase: str = "true"):
        pass

    assert signature_mismatches(drifted, VocabSettings) == [
        "vocab_size: type <class 'float'> != <class 'int'>", "lowercase: default 'true' != 'auto'",
    ]


def test_the_pipeline_takes_every_data_setting():
    """The pipeline's data parameters are the dataclass's, bar the recipe's per-phase ones; only the
    defaults named here differ (Google's dupe_factor for a real corpus)."""
    per_phase = {"max_seq_length", "max_predictions_per_seq"}
    renamed = {"seed": "data_seed"}
    overridden = {"dupe_factor": 5}
    parameters = inspect.signature(bert_pretraining.pipeline_func).parameters
    found, expected = {}, {}
    for entry in settings_core.describe(DataSettings):
        if entry["name"] not in per_phase:
            name = renamed.get(entry["name"], entry["name"])
            found[name] = (parameters[name].annotation, parameters[name].default)
            expected[name] = (entry["type"], overridden.get(entry["name"], entry["default"]))
    assert found == expected
    assert (DataSettings().max_seq_length, DataSettings().max_predictions_per_seq) == (PHASES[0].max_seq_length, PHASES[0].max_predictions_per_seq)


@pytest.mark.parametrize("command,settings_cls", [("export-vocab", VocabSettings), ("create-pretraining-data", DataSettings),
                                                  ("train-phase", TrainingSettings), ("train-phase", LaunchSettings),
                                                  ("evaluate", EvaluationSettings), ("register", PromotionSettings),
                                                  ("probe", ProbeSettings),
                                                  ("export-vocab", CorpusSettings), ("create-pretraining-data", CorpusSettings), ("run", CorpusSettings)])
def test_cli_flags_come_from_the_settings(command, settings_cls):
    parser = build_parser()
    step = parser._subparsers._group_actions[0].choices[command]
    defaults = {action.dest: action.default for action in step._actions}
    for entry in settings_core.describe(settings_cls):
        assert defaults[entry["name"]] == entry["default"]


def test_every_bad_value_is_reported_at_once():
    bad = VocabSettings(vocab_size=2, lowercase="maybe")
    assert settings_core.problems(bad) == ["vocab_size=2: must be at least 6", "lowercase='maybe': must be one of auto, true, false"]


def test_json_floats_come_back_as_ints():
    assert settings_core.from_mapping(VocabSettings, {"vocab_size": 4000.0}).vocab_size == 4000
    assert isinstance(settings_core.from_mapping(VocabSettings, {"vocab_size": 4000.0}).vocab_size, int)


def test_help_texts_of_settings_come_from_the_settings_and_live_nowhere_else():
    fields = {f.name for cls in settings_classes().values() for f in dataclasses.fields(cls)}
    assert not set(HELP) & fields  # a setting's help has one home, its dataclass
    fed = 0
    for name in inspect.signature(bert_pretraining.pipeline_func).parameters:
        source = source_of(name)
        if source is None:
            assert help_for(name) == HELP[name]
            continue
        cls, field = source
        expected = next(f for f in dataclasses.fields(cls) if f.name == field).metadata["help"]
        assert help_for(name) == expected or help_for(name).endswith(f" tokens): {expected}"), name
        fed += 1
    assert fed >= 40
    assert help_for("phase2_steps") == "phase 2 (512 tokens): optimizer steps in this phase"
    assert help_for("data_seed") == DataSettings.__dataclass_fields__["seed"].metadata["help"]
