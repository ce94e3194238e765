"""`bertpipe run`: the whole pipeline on this machine through kfp.local, on embedded defaults.

Defaults: a local artifact folder, sqlite MLflow, the tiny model and the bundled
demo corpus, sized to finish in minutes on a 2-core CPU. Every run trains under
`{artifact_root}/runs/{run id}/`, so a second run never overwrites the first
one's models; MLflow gets a new parent run and a new model version. Vocab and
data are content-keyed (`{artifact_root}/cache/`): a second run with the same
corpus and data settings reuses them. `resume_run_id` makes a run continue an
earlier one in its folder (finished phases reused, the unfinished one resumed).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from components.core import storage
from components.core.baselines import baseline_key
from components.core.corpus import CorpusSettings, iter_documents
from components.core.settings import check, pick
from components.core.errors import BertpipeError
from components.core.redact import mask
from components.core.tracking import sqlite_database
from components.core.metric_names import EVALUATION_METRICS_FILE
from pipelines import step_io


# Overrides of the pipeline's cluster-sized defaults that make a local run take minutes and show learning
# (README, the demo). Phase 1 continues pretraining the bundled MiniLM checkpoint (real weights, fresh MLM
# and NSP heads): a tiny model from scratch stays on the frequent-token plateau at [MASK] on this corpus
# even after 3,000 steps, where it starts to overfit. From the checkpoint, at a peak learning rate of 5e-4,
# dev accuracy at [MASK] is 0.10 / 0.15 / 0.17 at steps 50 / 100 / 150 and NSP learns from step 100 on;
# 1e-3 learns more slowly (0.13 at step 120), 3e-4 leaves NSP at the majority class after 150 steps.
# Phase 2's 10 steps of 8 at 512 (fresh optimizer) at 5e-5 raise dev NSP at 512 from 0.67 to 0.71 and
# accuracy at [MASK] from 0.150 to 0.159; 2e-5 gains less (0.69); 1e-4 and 2e-4 cost NSP (test 0.60, 0.56).
# A 0.2 test split gives the promotion floor ~315 instances at 512: on the ~120 of a 0.1 split, NSP's
# +0.097 over the majority class had a 95% interval reaching below 0.
DEMO_SETTINGS = {
    "corpus": "demo",
    "vocab_source": "demo",
    "init_checkpoint": "demo",
    "dupe_factor": 2,
    "dev_fraction": 0.05,
    "test_fraction": 0.2,
    "phase1_steps": 150,
    "phase1_batch_size": 16,
    "phase1_learning_rate": 5e-4,
    "phase1_warmup_steps": 15,
    "phase2_steps": 10,
    "phase2_batch_size": 8,
    "phase2_learning_rate": 5e-5,
    "phase2_warmup_steps": 2,
    "save_steps": 50,
    "probe_dataset": "demo",
}


def absolute_location(uri: str) -> str:
    """Subprocesses of kfp.local may run elsewhere: make local paths and sqlite URIs absolute."""
    if database := sqlite_database(uri):
        return "sqlite:///" + str(database.resolve())
    if "://" in uri:
        return uri
    return str(Path(uri).resolve())


def preflight(arguments: dict) -> None:
    """Fail at once, before any step starts, on inputs that would fail a step minutes later."""
    corpus = arguments["corpus"]
    if arguments.get("resume_run_id"):
        step_io.check_run_exists(arguments["artifact_root"], arguments["resume_run_id"])
    reading = pick(CorpusSettings, arguments)
    check(reading, "run")
    if next(iter_documents(corpus, reading), None) is None:
        raise BertpipeError(f"corpus {corpus} is empty: it holds no document to keep (only blank lines, or every one dropped by the cleaning)")
    if arguments.get("vocab_source"):
        from components.vocab.export import tokens_from_pretrained
        from components.core.vocab_files import check_special_tokens

        check_special_tokens(tokens_from_pretrained(arguments["vocab_source"])[0], arguments["vocab_source"])


def run_pipeline_locally(arguments: dict, kfp_root: str, *, verbose: bool = False, stream=None) -> dict:
    """Run bert_pretraining under kfp.local's SubprocessRunner; returns the pipeline's outputs.

    Shows a line per task and a bar per training phase on `stream` (default stdout)
    and keeps each task's full log under the run folder's logs/; `verbose` shows
    kfp.local's own stream instead. A failed task raises BertpipeError with its
    cause, after the tail of its log.
    """
    import kfp.local

    from pipelines.bert_pretraining import bert_pretraining
    from pipelines.live_view import LiveRun
    from pipelines.local_python import python_swap_in_command_only

    preflight(arguments)
    local_artifacts = not storage.is_s3(arguments["artifact_root"])
    if local_artifacts:
        Path(arguments["artifact_root"]).mkdir(parents=True, exist_ok=True)
    # Let steps find their dependencies in this interpreter's environment, as in the image.
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=kfp_root, raise_on_error=False)
    stream = stream or sys.stdout
    stream.write(f"running bert-pretraining locally (artifacts: {arguments['artifact_root']}, MLflow: {mask(arguments['tracking_uri'])})\n")
    live = LiveRun(Path(kfp_root, "logs", f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"), stream, verbose)
    with live.capture(), python_swap_in_command_only():
        task = bert_pretraining(**arguments)
    if live.pipeline_run_id:
        run_folder = Path(arguments["artifact_root"] if local_artifacts else kfp_root, "runs", arguments.get("resume_run_id") or live.pipeline_run_id)
        live.move_logs(run_folder / ("logs" if not (run_folder / "logs").exists() else f"logs-{live.pipeline_run_id}"))
    failed = live.failed()
    if failed:
        stream.write("\n".join(live.failure_lines(failed)) + "\n")
        raise BertpipeError(f"the pipeline failed in {failed.name}: {failed.summary} (full log: {failed.log_path})")
    if task.outputs is None or not task.outputs.get("registration"):
        raise BertpipeError(f"the pipeline failed: see {live.log_folder / 'pipeline.log'}")
    outputs = dict(task.outputs)
    outputs["logs"] = str(live.log_folder)
    outputs["registration"] = registration = json.loads(outputs["registration"])
    outputs["model_version"] = f"{registration['name']}/{registration['version']}"
    outputs["metrics"] = storage.read_json(storage.join(outputs["evaluation_uri"], EVALUATION_METRICS_FILE))["metrics"]
    return outputs


def metric_line(metrics: dict, length: int) -> str:
    """One length's test metrics, accuracies beside what a trivial guess scores on the same split."""
    def cell(name: str, label: str) -> str:
        value = metrics.get(f"{name}_{length}")
        trivial = metrics.get(baseline_key(f"{name}_{length}") or "")
        return f"{label} {value:.4f}" + (f" (trivial {trivial:.4f})" if trivial is not None else "") if value is not None else ""

    cells = [cell("mlm_accuracy_at_mask", "at [MASK]"), cell("mlm_accuracy", "all masked"), cell("nsp_accuracy", "nsp_accuracy"), cell("mlm_top5_accuracy", "top5")]
    if f"perplexity_{length}" in metrics:
        cells.append(f"perplexity {metrics[f'perplexity_{length}']:.4g}")
    return f"  {length}: " + ", ".join(cell for cell in cells if cell)


def reuse_lines(outputs: dict) -> list[str]:
    """What the run took from earlier runs instead of making it again (from its steps' artifacts)."""
    reused, resumed = [], []
    for name in ("vocab", "data_128", "data_512", "phase_128", "phase_512"):
        metadata = getattr(outputs.get(name), "metadata", None) or {}
        if metadata.get("reused"):
            reused.append(name.replace("_", "-"))
        elif metadata.get("resumed_from"):
            resumed.append(f"{name.replace('_', '-')} from {metadata['resumed_from']}")
    lines = [f"reused:            {', '.join(reused)} (complete and verified, same inputs and settings)"] if reused else []
    return lines + [f"resumed:           {item}" for item in resumed]


def summary_lines(outputs: dict, arguments: dict) -> list[str]:
    """What the user wants to see when the run ends: metrics, where things are, the model version."""
    lines = ["", "bert-pretraining finished", "", "evaluation (held-out test split; MLM accuracy at the [MASK] positions, then over all masked ones, where copying the"
             " tokens BERT leaves unchanged also scores; trivial: always the most frequent token there, the majority NSP class):"]
    lines += [metric_line(outputs["metrics"], length) for length in (128, 512)]
    registration = outputs["registration"]
    name, version, promotion = registration["name"], registration["version"], registration["promotion"]
    lines += [
        "",
        f"model folder:      {outputs['model_uri']}",
        f"run report:        {registration['report_uri']}",
        f"task logs:         {outputs['logs']}",
        *reuse_lines(outputs),
        f"artifacts:         {arguments['artifact_root']}",
        f"MLflow:            {mask(arguments['tracking_uri'])} (experiment {arguments['experiment']})",
        f"registered model:  {name} version {version} (models:/{name}/{version})",
        f"promotion:         {promotion['decision']}{' (dry run)' if promotion.get('dry_run') else ''}: {'; '.join(promotion['reasons'])}",
        f"try it:            bertpipe fill-mask 'the [MASK] of denmark' --model models:/{name}/{version} --tracking-uri {mask(arguments['tracking_uri'])}",
    ]
    if sqlite_database(arguments["tracking_uri"]):
        lines.append(f"browse it with:    mlflow ui --backend-store-uri {arguments['tracking_uri']}")
    return lines


def default_kfp_root(artifact_root: str) -> str:
    """kfp.local needs a local pipeline_root even when the artifacts go to S3."""
    if storage.is_s3(artifact_root):
        return str(Path(os.environ.get("BERTPIPE_KFP_ROOT", "bertpipe-artifacts/kfp-local")).resolve())
    return str(Path(artifact_root, "kfp-local").resolve())
