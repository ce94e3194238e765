"""Put a trained BERT into the MLflow model registry as a new version (components.core.model_store gets it back out).

The trainer writes a BertForPreTraining folder (safetensors, tokenizer files,
vocab_info.json). The registry holds it as an MLflow transformers "fill-mask"
model, because that is what people load and serve: a BertForMaskedLM, which
takes bert.* and cls.predictions.* from the same weights. The NSP head
(bert.pooler.*, cls.seq_relationship.*) has no place in that pipeline, so it is
stored beside it in the logged model (bertpipe/nsp_head.safetensors, a few MB
at most) together with vocab_info.json. `model_store.download_model` puts the
pieces back together, so a registered version (e.g. the champion) comes back as
the very BertForPreTraining folder the trainer wrote, ready for evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

from components.core import storage
from components.core.errors import BertpipeError
from components.core.model_store import EXTRA_DIR, LOGGED_MODEL_NAME, NSP_HEAD_FILE
from components.core.redact import mask
from components.core.tracking import PIPELINE_RUN_TAG, Tracking, log_metrics, mlflow_errors, step_run
from components.core.vocab_files import INFO_FILE

log = logging.getLogger(__name__)

STEP_NAME = "register"
NSP_HEAD_PREFIXES = ("bert.pooler.", "cls.seq_relationship.")
METRIC_TAG_PREFIX = "metric."
SOURCE_TAG = "bertpipe.source_model_uri"
VOCAB_TAG = "bertpipe.vocab_sha256"
# What the logged model needs at load time; pinned to what it was logged with.
# Explicit, because MLflow's inference would want torchvision, which is not installed.
REQUIRED_PACKAGES = ("mlflow", "transformers", "torch", "tokenizers", "safetensors")


def pip_requirements() -> list[str]:
    """Exact pins of the installed packages the logged model needs (local suffixes like +cpu dropped)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in REQUIRED_PACKAGES]


def load_pretraining_folder(folder: Path):
    """Load a BertForPreTraining folder as (BertForMaskedLM, tokenizer, NSP head tensors), or explain what is wrong."""
    from transformers import BertForMaskedLM, BertForPreTraining, BertTokenizerFast

    folder = folder.resolve()  # an absolute name_or_path never looks like a hub repo id to MLflow
    try:
        pretraining, info = BertForPreTraining.from_pretrained(str(folder), output_loading_info=True)
        tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BertpipeError(f"cannot load {folder} as a BERT pretraining model folder (config.json, model.safetensors, tokenizer files): {error}") from error
    if info["missing_keys"] or info["mismatched_keys"]:
        missing = sorted(info["missing_keys"]) + sorted(str(key) for key in info["mismatched_keys"])
        raise BertpipeError(f"{folder} does not hold a complete BertForPreTraining (missing or mismatched: {', '.join(missing[:5])}); register the trainer's output folder")
    if tokenizer.mask_token is None or len(tokenizer) > pretraining.config.vocab_size:
        raise BertpipeError(f"tokenizer in {folder} ({len(tokenizer)} tokens, mask {tokenizer.mask_token}) does not fit the model's vocab of {pretraining.config.vocab_size}")
    nsp_head = {key: value.detach().clone().contiguous() for key, value in pretraining.state_dict().items() if key.startswith(NSP_HEAD_PREFIXES)}
    del pretraining
    masked_lm = BertForMaskedLM.from_pretrained(str(folder))
    return masked_lm, tokenizer, nsp_head


def _model_card(registered_model_name: str, source: str, vocab_info: dict):
    from huggingface_hub import ModelCard

    return ModelCard(
        f"# {registered_model_name}\n\nBERT pretrained with masked LM and next-sentence prediction by bertpipe.\n\n"
        f"- source folder: {source}\n- vocab: {vocab_info.get('size', '?')} tokens, sha256 {vocab_info.get('sha256', '?')}, lowercase {vocab_info.get('lowercase', '?')}\n"
        f"- logged as BertForMaskedLM (task fill-mask); the NSP head is in {EXTRA_DIR}/{NSP_HEAD_FILE}\n"
    )


def _version_tags(model_uri: str, tracking: Tracking, vocab_info: dict, tags: dict[str, str] | None, metrics: dict[str, float] | None) -> dict[str, str]:
    traced = {SOURCE_TAG: model_uri}
    if tracking.pipeline_run_id:
        traced[PIPELINE_RUN_TAG] = tracking.pipeline_run_id
    if vocab_info.get("sha256"):
        traced[VOCAB_TAG] = vocab_info["sha256"]
    traced.update({f"{METRIC_TAG_PREFIX}{key}": repr(float(value)) for key, value in (metrics or {}).items()})
    traced.update({key: str(value) for key, value in (tags or {}).items()})
    return traced


def register_model(
    model_uri: str,
    registered_model_name: str,
    *,
    tracking: Tracking,
    tags: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
) -> dict:
    """Log the BertForPreTraining folder at model_uri as a fill-mask model and register it as a new version.

    The version is tagged with where it came from (source URI, pipeline run id,
    vocab hash), `metrics` as `metric.<key>` and every entry of `tags`; metrics
    are also logged on the step's run. The folder is checked before MLflow is
    touched, so a broken folder registers nothing. Returns
    {"name", "version", "model_uri": "models:/name/N", "run_id"}.
    """
    import mlflow
    from safetensors.torch import save_file

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}", registered_model_name):
        raise BertpipeError(f"registered model name {registered_model_name!r} must be letters, digits, '.', '_' or '-'")
    with storage.local_dir(model_uri) as folder:
        masked_lm, tokenizer, nsp_head = load_pretraining_folder(folder)
        info_path = folder / INFO_FILE
        vocab_info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    version_tags = _version_tags(model_uri, tracking, vocab_info, tags, metrics)
    log.info("registering %s as a new version of %r at %s", model_uri, registered_model_name, mask(tracking.tracking_uri))

    with step_run(tracking, STEP_NAME, {"model_uri": model_uri, "registered_model_name": registered_model_name}) as run_id:
        with mlflow_errors(tracking.tracking_uri, f"logging and registering {model_uri} as {registered_model_name}"):
            if metrics:
                log_metrics(metrics)
            model_info = mlflow.transformers.log_model(
                {"model": masked_lm, "tokenizer": tokenizer},
                name=LOGGED_MODEL_NAME,
                task="fill-mask",
                pip_requirements=pip_requirements(),
                model_card=_model_card(registered_model_name, model_uri, vocab_info),
            )
            with tempfile.TemporaryDirectory(prefix="bertpipe-extra-") as extra:
                save_file(nsp_head, os.path.join(extra, NSP_HEAD_FILE))
                Path(extra, INFO_FILE).write_text(json.dumps(vocab_info, indent=2, sort_keys=True) + "\n")
                mlflow.MlflowClient().log_model_artifacts(model_info.model_id, extra, artifact_path=EXTRA_DIR)
            version = mlflow.register_model(model_info.model_uri, registered_model_name, tags=version_tags)
    result = {"name": registered_model_name, "version": str(version.version), "model_uri": f"models:/{registered_model_name}/{version.version}", "run_id": run_id}
    log.info("registered %s (run %s)", result["model_uri"], run_id)
    return result
