"""What each parameter means, for the CLI's --help of every subcommand that takes it.

A setting's help text lives in its step's settings dataclass (its one home); help_for finds the field
that a name feeds (pipelines.pipeline_parameters.source_of, the pipeline's renamed parameters included).
HELP holds only what is no setting: locations, the steps' inputs and outputs, the pipeline's own inputs.
"""

import dataclasses

from components.core.recipe import PHASES

HELP = {
    # where things are
    "artifact_root": "where steps write vocab, data, checkpoints, models and reports: a local folder or s3://bucket/prefix",
    "corpus": "text corpus: a file, folder, glob or s3:// prefix; one sentence per line, a blank line between documents; .gz ok; 'demo' = the bundled public-domain corpus",
    "tracking_uri": "MLflow tracking URI: sqlite:///mlflow.db (embedded store) or http://host:5000 (an MLflow server)",
    "experiment": "MLflow experiment that holds the runs",
    "registered_model_name": "MLflow registered model that gets a new version per pipeline run",
    "resume_run_id": "continue this earlier run (its folder under <artifact-root>/runs/): finished phases are reused, an unfinished one resumes "
                     "from its newest checkpoint ('' = a new run)",
    # the steps' inputs and outputs
    "vocab_source": "export the vocab of this tokenizer/model (local folder, s3:// folder, hub id or 'demo': the bundled MiniLM checkpoint's) instead of training one",
    "source": "tokenizer/model to export the vocab from: local folder, s3:// folder or hub id",
    "vocab_uri": "vocab folder written by export-vocab (local or s3://)",
    "num_workers": "processes that build shards in parallel, at least 1 (1 = in this process; the output does not depend on it)",
    "data_uri": "pretraining-data folder written by create-pretraining-data (local or s3://)",
    "output_uri": "folder to write into (local or s3://)",
    "model_uri": "model folder (local or s3://) written by train-phase, or models:/NAME/VERSION or models:/NAME@ALIAS",
    "evaluation_uri": "evaluation folder written by evaluate (its metrics.json holds the new model's and the champion's metrics)",
    "report_uri": "where the run report goes (default: report.md beside the evaluation folder)",
    "data_uris": 'data folders by sequence length, as JSON: {"128": "./data-128", "512": "./data-512"}',
    "probe_dataset": "labeled CSV/JSONL/Parquet (text, label[, split]) for the downstream probe of the new model and the champion; 'demo' = the bundled source-classification set; '' = no probe",
}


def help_for(name: str) -> str:
    """The help text of a parameter: HELP's, else that of the setting it feeds; a phase{N}_* parameter's says which phase."""
    from pipelines.pipeline_parameters import source_of

    if name in HELP:
        return HELP[name]
    source = source_of(name)
    if source is None:
        raise KeyError(f"no help text for parameter {name!r}: give it a settings field or add it to pipelines/parameters.py")
    cls, field = source
    text = next(f for f in dataclasses.fields(cls) if f.name == field).metadata["help"]
    phase = next((phase for phase in PHASES if name.startswith(f"phase{phase.number}_")), None)
    return f"phase {phase.number} ({phase.max_seq_length} tokens): {text}" if phase else text
