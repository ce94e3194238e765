"""The pipeline's parameters, each traced to the step setting it feeds, whose checks then apply.

`bertpipe run`, `submit` and `schedule` check every argument with the step's own rules before
anything starts: every bad value at once, named as the pipeline names it, exit 2, instead of a
step failing hours later. A test keeps this table and the pipeline signature in step.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Mapping
from functools import lru_cache

from components.core import settings as settings_core
from components.core.errors import BertpipeError
from components.core.recipe import PHASES

log = logging.getLogger(__name__)

SETTINGS_CLASSES = (
    "components.vocab.settings:VocabSettings",
    "components.core.corpus:CorpusSettings",
    "components.data.settings:DataSettings",
    "components.training.settings:TrainingSettings",
    "components.evaluation.settings:EvaluationSettings",
    "components.evaluation.settings:ProbeSettings",
    "components.registry.settings:PromotionSettings",
)
# Pipeline names that differ from the field they feed.
RENAMED = {
    "data_seed": ("DataSettings", "seed"),
    "train_seed": ("TrainingSettings", "seed"),
    "init_checkpoint": ("TrainingSettings", "init_model"),
    **{f"phase{phase.number}_{suffix}": ("TrainingSettings", field)
       for phase in PHASES
       for suffix, field in (("steps", "max_steps"), ("batch_size", "per_device_train_batch_size"),
                             ("learning_rate", "learning_rate"), ("warmup_steps", "warmup_steps"),
                             ("gradient_accumulation_steps", "gradient_accumulation_steps"))},
}
@lru_cache(maxsize=None)
def settings_classes() -> dict[str, type]:
    """The step settings classes that exist, by class name."""
    found = {}
    for spec in SETTINGS_CLASSES:
        module, _, name = spec.partition(":")
        try:
            found[name] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return found


def source_of(parameter: str) -> tuple[type, str] | None:
    """(settings class, field) that a pipeline parameter feeds, or None for an input/location."""
    classes = settings_classes()
    if parameter in RENAMED:
        cls_name, field = RENAMED[parameter]
        return (classes[cls_name], field) if cls_name in classes else None
    owners = [cls for cls in classes.values() if parameter in {f.name for f in dataclasses.fields(cls)}]
    return (owners[0], parameter) if owners else None


def argument_problems(arguments: Mapping[str, object]) -> list[str]:
    """Every bad pipeline argument, one line each, checked by the rules of the setting it feeds."""
    found = []
    for name, value in arguments.items():
        source = source_of(name)
        if source is not None:
            found += settings_core.value_problems(source[0], source[1], value, shown_as=name)
    return found


def argument_warnings(arguments: Mapping[str, object]) -> list[str]:
    """What each phase's TrainingSettings.warnings() says of the arguments given (legal, probably unintended)."""
    cls = settings_classes().get("TrainingSettings")
    found = []
    for phase in PHASES if cls else ():
        fields = {field: arguments[name] for name, (owner, field) in RENAMED.items()
                  if owner == "TrainingSettings" and name.startswith(f"phase{phase.number}_") and name in arguments}
        if {"max_steps", "warmup_steps"} <= fields.keys():  # a default of the class is not the pipeline's
            found += [f"phase {phase.number}: {warning}" for warning in cls(**fields).warnings()]
    return found


def check_arguments(arguments: Mapping[str, object], action: str) -> None:
    """Refuse every bad argument at once; log the warnings (on the terminal, not in a task log nobody reads)."""
    found = argument_problems(arguments)
    if found:
        raise BertpipeError(f"{action}: " + "; ".join(found))
    for warning in argument_warnings(arguments):
        log.warning("%s: %s", action, warning)
