"""Registered models back out of the MLflow registry: version and alias resolution, the champion, downloads.

The registry step (components.registry) writes what this reads; the evaluate step
reads it too (to evaluate `models:/name@champion` on the new model's data), and a
step never imports another step, so the read side lives here.

A registered version is an MLflow transformers "fill-mask" model (BertForMaskedLM)
with the NSP head and vocab_info.json stored beside it under bertpipe/.
`download_model` puts the pieces back together, so a registered version comes back
as the very BertForPreTraining folder the trainer wrote.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from pathlib import Path
from typing import Iterator

from components.core import storage
from components.core.errors import BertpipeError
from components.core.tracking import mlflow_errors
from components.core.vocab_files import INFO_FILE, VOCAB_FILE, vocab_file_bytes

log = logging.getLogger(__name__)

CHAMPION = "champion"
LOGGED_MODEL_NAME = "model"
EXTRA_DIR = "bertpipe"
NSP_HEAD_FILE = "nsp_head.safetensors"


def registry_client(tracking_uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def alias_version(client, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if getattr(error, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def current_champion(registered_model_name: str, *, tracking_uri: str) -> str | None:
    """The champion's version number, or None when there is none yet (or no such registered model)."""
    with mlflow_errors(tracking_uri, f"looking up the champion of {registered_model_name}"):
        return alias_version(registry_client(tracking_uri), registered_model_name, CHAMPION)


def resolve_version(model_uri: str, *, tracking_uri: str) -> tuple[str, str]:
    """'models:/name/3' or 'models:/name@alias' -> (name, version number as a string)."""
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([A-Za-z0-9_-]+))", model_uri)
    if not match:
        raise BertpipeError(f"model URI {model_uri!r} must look like models:/NAME/VERSION or models:/NAME@ALIAS")
    name, version, alias = match.groups()
    if version:
        return name, version
    with mlflow_errors(tracking_uri, f"resolving {model_uri}"):
        return name, str(registry_client(tracking_uri).get_model_version_by_alias(name, alias).version)


def download_model(model_uri: str, output_dir: str, *, tracking_uri: str) -> dict:
    """Rebuild the BertForPreTraining folder of a registered version (models:/name/3 or models:/name@champion) in output_dir.

    output_dir (local or s3://) receives config.json, model.safetensors (MLM and
    NSP heads), the tokenizer files and vocab_info.json: the same layout the
    trainer writes, so evaluation reads it like any trained model. Returns
    {"name", "version", "model_uri": "models:/name/N", "folder": output_dir}.
    """
    import mlflow
    from safetensors.torch import load_file
    from transformers import BertForPreTraining, BertTokenizerFast

    name, version = resolve_version(model_uri, tracking_uri=tracking_uri)
    pinned_uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="bertpipe-download-") as tmp:
        with mlflow_errors(tracking_uri, f"downloading {pinned_uri}"):
            mlflow.set_tracking_uri(tracking_uri)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=pinned_uri, dst_path=tmp))
        nsp_file = local / EXTRA_DIR / NSP_HEAD_FILE
        if not nsp_file.is_file():
            raise BertpipeError(f"{pinned_uri} was not registered by bertpipe (no {EXTRA_DIR}/{NSP_HEAD_FILE}); it cannot be evaluated on NSP")
        model, info = BertForPreTraining.from_pretrained(str(local / LOGGED_MODEL_NAME), output_loading_info=True)
        nsp_head = load_file(str(nsp_file))
        model.load_state_dict(nsp_head, strict=False)
        unrestored = set(info["missing_keys"]) - set(nsp_head)
        if unrestored:
            raise BertpipeError(f"{pinned_uri} lacks weights {sorted(unrestored)[:5]}; re-register the model")
        tokenizer = BertTokenizerFast.from_pretrained(str(local / "components" / "tokenizer"))
        with storage.staged_dir(output_dir) as staging:
            model.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
            # vocab.txt as export-vocab writes it (ids are line numbers), so its sha256 matches vocab_info.json.
            tokens = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
            (staging / VOCAB_FILE).write_bytes(vocab_file_bytes(tokens))
            (staging / INFO_FILE).write_bytes((local / EXTRA_DIR / INFO_FILE).read_bytes())
    log.info("downloaded %s to %s", pinned_uri, output_dir)
    return {"name": name, "version": version, "model_uri": pinned_uri, "folder": output_dir}


@contextlib.contextmanager
def model_folder(model_uri: str, tracking_uri: str) -> Iterator[Path]:
    """A local folder holding the model at model_uri: a folder, an s3:// prefix or a registry URI.

    Registry URIs (models:/name/3, models:/name@champion) come back as the
    BertForPreTraining folder the trainer wrote, NSP head included.
    """
    if not model_uri.startswith("models:/"):
        with storage.local_dir(model_uri) as folder:
            yield folder
        return
    with tempfile.TemporaryDirectory(prefix="bertpipe-model-") as tmp:
        yield Path(download_model(model_uri, tmp, tracking_uri=tracking_uri)["folder"])
