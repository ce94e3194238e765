"""What each parameter means, once, for the CLI's --help of every subcommand that takes it.

Settings that have a dataclass (components.*.settings) keep their help there; help_for falls back to it.
"""

HELP = {
    # where things are
    "artifact_root": "where steps write vocab, data, checkpoints, models and reports: a local folder or s3://bucket/prefix",
    "corpus": "text corpus: a file, folder, glob or s3:// prefix; one sentence per line, a blank line between documents; .gz ok; 'demo' = the bundled public-domain corpus",
    "tracking_uri": "MLflow tracking URI: sqlite:///mlflow.db (embedded store) or http://host:5000 (an MLflow server)",
    "experiment": "MLflow experiment that holds the runs",
    "registered_model_name": "MLflow registered model that gets a new version per pipeline run",
    # vocab
    "vocab_source": "export the vocab of this tokenizer/model (local folder, s3:// folder or hub id) instead of training one",
    "source": "tokenizer/model to export the vocab from: local folder, s3:// folder or hub id",
    "vocab_size": "size of the WordPiece vocab trained on the corpus (ignored when the vocab is exported)",
    "lowercase": "lower-case and strip accents ('auto' keeps the source tokenizer's setting; a trained vocab lower-cases)",
    "vocab_uri": "vocab folder written by export-vocab (local or s3://)",
    # data
    "max_seq_length": "maximum tokens per instance, [CLS] and [SEP]s included (Google: 128 for phase 1, 512 for phase 2)",
    "max_predictions_per_seq": "maximum masked tokens per instance (Google: 20 at 128, 80 at 512)",
    "masked_lm_prob": "fraction of tokens to mask",
    "short_seq_prob": "probability of a shorter target length, so the model also sees short inputs",
    "dupe_factor": "how many times each train document is used, each time with different masks and pairs (dev and test: once)",
    "do_whole_word_mask": "mask all WordPiece pieces of a word together",
    "dev_fraction": "fraction of documents held out for validation during training",
    "test_fraction": "fraction of documents held out for the final evaluation",
    "data_seed": "random seed of instance creation (same seed and inputs: byte-identical data)",
    "seed": "random seed (same seed and inputs: identical output)",
    "per_word_replacement": "draw the 80/10/10 [MASK]/random/keep choice once per whole word (a fix of Google's per-piece draw; off = exact reference)",
    "dynamic_masking": "store the train split unmasked; training masks it anew each epoch (RoBERTa-style). Dev and test keep fixed masks",
    "shard_size_mb": "corpus text per shard; memory grows with the shard, not the corpus",
    "num_workers": "processes that build shards in parallel, at least 1 (1 = in this process; the output does not depend on it)",
    "data_uri": "pretraining-data folder written by create-pretraining-data (local or s3://)",
    "output_uri": "folder to write into (local or s3://)",
    # training
    "init_checkpoint": "start phase 1 from this model folder, s3:// URI or hub id instead of a fresh preset",
    "max_eval_batches": "cap on evaluation batches (for quick checks; default: the whole split)",
    "train_seed": "random seed of model initialisation and batch order",
    # evaluation and registry
    "model_uri": "model folder (local or s3://) written by train-phase, or models:/NAME/VERSION or models:/NAME@ALIAS",
    "evaluation_uri": "evaluation folder written by evaluate (its metrics.json holds the new model's and the champion's metrics)",
    "report_uri": "where the run report goes (default: report.md beside the evaluation folder)",
    "split": "held-out split to evaluate on",
    "data_uris": 'data folders by sequence length, as JSON: {"128": "./data-128", "512": "./data-512"}',
    "promotion_metric": "metric the new model must improve to replace the champion",
    "promotion_margin": "how much it must beat the champion by (strictly more than this)",
    "nsp_tolerance": "how much NSP accuracy at 512 may drop at most on promotion",
    "promotion_floor": "the metric's minimum for any champion, the first one included",
    "promotion_over_baseline": "a champion must beat always guessing the most frequent masked token and the majority NSP class on the test split",
    "promotion_dry_run": "decide and report, but move no alias",
    "require_probe": "the downstream probe's accuracy must not drop by more than --probe-tolerance either",
    "probe_tolerance": "how much the probe's test accuracy may drop at most (with --require-probe)",
    "probe_dataset": "labeled CSV/JSONL/Parquet (text, label[, split]) for the downstream probe of the new model and the champion; 'demo' = the bundled source-classification set; '' = no probe",
    "confidence_level": "level of the paired bootstrap intervals of new model minus champion (evaluation and probe)",
    "tags": "extra tags for the model version, as a JSON object",
    "metrics": "evaluation metrics to record on the version, as a JSON object",
    "per_device_eval_batch_size": "sequences per evaluation batch",
}

PHASE_HELP = {
    "steps": "optimizer steps of phase {n}",
    "batch_size": "sequences per step in phase {n}",
    "learning_rate": "peak learning rate of phase {n}",
    "warmup_steps": "warmup steps of phase {n}",
    "gradient_accumulation_steps": "micro-batches accumulated per optimizer step in phase {n}",
}


def _corpus_help() -> dict[str, str]:
    """How the corpus is read: the help texts live with CorpusSettings (their one home)."""
    from components.core.corpus import CorpusSettings
    from components.core.settings import describe

    return {entry["name"]: entry["help"] for entry in describe(CorpusSettings)}


def help_for(name: str) -> str:
    """The help text of a parameter; phase{N}_* parameters share one text per suffix; a training
    setting's is its TrainingSettings help."""
    from components.core.settings import describe
    from components.training.settings import TrainingSettings

    if name in HELP:
        return HELP[name]
    corpus_help = _corpus_help()
    if name in corpus_help:
        return corpus_help[name]
    training = {entry["name"]: entry["help"] for entry in describe(TrainingSettings)}
    if name in training:
        return training[name]
    if name.startswith(("phase1_", "phase2_")):
        phase, suffix = name.split("_", 1)
        return PHASE_HELP[suffix].format(n=f"{phase[-1]} ({128 if phase == 'phase1' else 512} tokens)")
    raise KeyError(f"no help text for parameter {name!r}: add it to pipelines/parameters.py")
