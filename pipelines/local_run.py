"""`bertpipe run`: the whole pipeline on this machine through kfp.local, on embedded defaults.

Defaults: a local artifact folder, sqlite MLflow, the tiny model and the bundled
demo corpus, sized to finish in minutes on a 2-core CPU. Every run writes under
`{artifact_root}/runs/{run id}/`, so a second run never reuses or overwrites
the first one's outputs; MLflow gets a new parent run and a new model version.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from components.core import storage
from components.core.corpus import CorpusSettings, iter_documents
from components.core.settings import check, pick
from components.core.errors import BertpipeError
from components.core.redact import mask
from components.core.scoring import EVALUATION_METRICS_FILE

log = logging.getLogger(__name__)

# Overrides of the pipeline's cluster-sized defaults that make a local run take minutes.
DEMO_SETTINGS = {
    "corpus": "demo",
    "vocab_size": 4000,
    "dupe_factor": 2,
    "dev_fraction": 0.05,
    "test_fraction": 0.05,
    "phase1_learning_rate": 1e-3,
    "phase2_steps": 30,
    "phase2_batch_size": 8,
    "phase2_learning_rate": 5e-4,
    "phase2_warmup_steps": 3,
    "save_steps": 100,
}


def absolute_location(uri: str) -> str:
    """Subprocesses of kfp.local may run elsewhere: make local paths and sqlite URIs absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if "://" in uri:
        return uri
    return str(Path(uri).resolve())


def preflight(arguments: dict) -> None:
    """Fail at once, before any step starts, on inputs that would fail a step minutes later."""
    corpus = arguments["corpus"]
    reading = pick(CorpusSettings, arguments)
    check(reading, "run")
    if next(iter_documents(corpus, reading), None) is None:
        raise BertpipeError(f"corpus {corpus} is empty: it holds no document to keep (only blank lines, or every one dropped by the cleaning)")
    if arguments.get("vocab_source"):
        from components.vocab.export import tokens_from_pretrained
        from components.core.vocab_files import check_special_tokens

        check_special_tokens(tokens_from_pretrained(arguments["vocab_source"])[0], arguments["vocab_source"])


def run_pipeline_locally(arguments: dict, kfp_root: str) -> dict:
    """Run bert_pretraining under kfp.local's SubprocessRunner; returns the pipeline's outputs."""
    import kfp.local

    from pipelines.bert_pretraining import bert_pretraining

    preflight(arguments)
    if not storage.is_s3(arguments["artifact_root"]):
        Path(arguments["artifact_root"]).mkdir(parents=True, exist_ok=True)
    # Let steps find their dependencies in this interpreter's environment, as in the image.
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=kfp_root, raise_on_error=False)
    log.info("running pipeline bert-pretraining locally (artifacts: %s, MLflow: %s)", arguments["artifact_root"], arguments["tracking_uri"])
    task = bert_pretraining(**arguments)
    if task.outputs is None or not task.outputs.get("registration"):
        raise BertpipeError("the pipeline failed: see the failing step's log above")
    outputs = dict(task.outputs)
    outputs["registration"] = registration = json.loads(outputs["registration"])
    outputs["model_version"] = f"{registration['name']}/{registration['version']}"
    outputs["metrics"] = storage.read_json(storage.join(outputs["evaluation_uri"], EVALUATION_METRICS_FILE))["metrics"]
    return outputs


def summary_lines(outputs: dict, arguments: dict) -> list[str]:
    """What the user wants to see when the run ends: metrics, where things are, the model version."""
    lines = ["", "bert-pretraining finished", "", "evaluation (held-out test split):"]
    for length in (128, 512):
        picked = {k: v for k, v in sorted(outputs["metrics"].items()) if k.endswith(f"_{length}")}
        lines.append(f"  {length}: " + ", ".join(f"{k.removesuffix(f'_{length}')}={v:.4g}" for k, v in picked.items()))
    registration = outputs["registration"]
    name, version, promotion = registration["name"], registration["version"], registration["promotion"]
    lines += [
        "",
        f"model folder:      {outputs['model_uri']}",
        f"run report:        {registration['report_uri']}",
        f"artifacts:         {arguments['artifact_root']}",
        f"MLflow:            {mask(arguments['tracking_uri'])} (experiment {arguments['experiment']})",
        f"registered model:  {name} version {version} (models:/{name}/{version})",
        f"promotion:         {promotion['decision']}{' (dry run)' if promotion.get('dry_run') else ''}: {'; '.join(promotion['reasons'])}",
    ]
    if arguments["tracking_uri"].startswith("sqlite"):
        lines.append(f"browse it with:    mlflow ui --backend-store-uri {arguments['tracking_uri']}")
    return lines


def default_kfp_root(artifact_root: str) -> str:
    """kfp.local needs a local pipeline_root even when the artifacts go to S3."""
    if storage.is_s3(artifact_root):
        return str(Path(os.environ.get("BERTPIPE_KFP_ROOT", "bertpipe-artifacts/kfp-local")).resolve())
    return str(Path(artifact_root, "kfp-local").resolve())
