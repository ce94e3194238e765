"""The KFP components: thin wrappers that call into components.* (imports inside the body, no logic).

KFP ships only each function's own source to the pod, so every body imports
what it needs; the image (or, locally, the venv) has bertpipe installed. Big
outputs go to `artifact_root` through components.core.storage; the KFP artifacts
carry their URIs (pipelines.step_io).
"""

from typing import NamedTuple

from kfp import dsl

from pipelines.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fingerprint_inputs(corpus: str, vocab_source: str) -> NamedTuple("Fingerprints", [("corpus", str), ("vocab", str)]):
    """Fingerprints (by listing) of the corpus and of what the vocab is made from: the keys of the vocab and data
    tasks' inputs, so Kubeflow's cache hits when they are unchanged and misses when a file changed. Never cached itself."""
    from components.core.console import configure_logging
    from components.core.content_key import input_fingerprints

    configure_logging()
    return input_fingerprints(corpus, vocab_source)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def resolve_run(artifact_root: str, resume_run_id: str, pipeline_run_id: str) -> str:
    """The run id whose folder the training, evaluation and registration tasks write: this run's, or the one it resumes."""
    from components.core.console import configure_logging
    from pipelines import step_io

    configure_logging()
    return step_io.resolve_run(artifact_root, resume_run_id, pipeline_run_id)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def export_vocab(
    artifact_root: str,
    fingerprint: str,
    vocab_source: str,
    corpus: str,
    tracking_uri: str,
    experiment: str,
    vocab: dsl.Output[dsl.Artifact],
    vocab_size: int = 8000,
    lowercase: str = "auto",
    corpus_format: str = "auto",
    text_column: str = "text",
    sentences: str = "split",
    normalize_unicode: bool = True,
    normalize_whitespace: bool = True,
    min_document_chars: int = 50,
    dedup: bool = True,
    clean_text_format: bool = False,
    skip_bad_records: bool = False,
):
    """Export the vocab of a pretrained tokenizer (vocab_source), or train a WordPiece vocab on the corpus."""
    from components.core.console import configure_logging
    from components.core.corpus import CorpusSettings
    from components.core.settings import pick
    from components.core.tracking import Tracking
    from components.vocab.export import VocabSettings, export_vocab, vocab_location
    from pipelines import step_io

    configure_logging()
    settings, corpus_settings = pick(VocabSettings, locals()), pick(CorpusSettings, locals())
    uri = vocab_location(artifact_root, vocab_source, corpus, settings, corpus_settings, fingerprint)
    info = export_vocab(uri, source=vocab_source, corpus=corpus, settings=settings, corpus_settings=corpus_settings,
                        tracking=Tracking(tracking_uri, experiment), fingerprint=fingerprint)
    step_io.publish(vocab, uri, info)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_pretraining_data(
    corpus: str,
    vocab: dsl.Input[dsl.Artifact],
    artifact_root: str,
    fingerprint: str,
    data_folder: dsl.Output[dsl.Artifact],
    max_seq_length: int = 128,
    max_predictions_per_seq: int = 20,
    masked_lm_prob: float = 0.15,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    do_whole_word_mask: bool = True,
    per_word_replacement: bool = False,
    dynamic_masking: bool = False,
    dev_fraction: float = 0.02,
    test_fraction: float = 0.02,
    seed: int = 12345,
    shard_size_mb: float = 16.0,
    corpus_format: str = "auto",
    text_column: str = "text",
    sentences: str = "split",
    normalize_unicode: bool = True,
    normalize_whitespace: bool = True,
    min_document_chars: int = 50,
    dedup: bool = True,
    clean_text_format: bool = False,
    skip_bad_records: bool = False,
) -> list:
    """Split the corpus by document into shards of raw text, written with the plan to the content-keyed data folder
    (named by data_folder; one that already holds this data is kept: components.data.reuse); returns the shard names.

    The names ("train-00012") are the ParallelFor's work items: a few bytes each, whatever
    the corpus; each shard task reads its documents and the settings from the data folder.
    """
    from components.core.console import configure_logging
    from components.core.corpus import CorpusSettings
    from components.core.settings import pick
    from components.data.settings import DataSettings
    from components.data.reuse import data_location
    from components.data.split import plan_pretraining_data as plan
    from pipelines import step_io

    configure_logging()
    settings, corpus_settings, vocab_uri = pick(DataSettings, locals()), pick(CorpusSettings, locals()), step_io.uri_of(vocab)
    uri = data_location(artifact_root, corpus, vocab_uri, settings, corpus_settings, fingerprint)
    # An artifact, not a parameter: kfp.local replaces every task-output parameter inside a ParallelFor by the loop item.
    step_io.publish(data_folder, uri, {})
    return plan(corpus, vocab_uri, uri, settings, corpus_settings, fingerprint)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def create_pretraining_shard(shard: str, data_folder: dsl.Input[dsl.Artifact]):
    """Instances of one planned shard (Google's algorithm, seeded by shard), written as one Parquet file."""
    from components.core.console import configure_logging
    from components.data.shard import create_pretraining_shard as make_shard
    from pipelines import step_io

    configure_logging()
    make_shard(step_io.uri_of(data_folder), shard)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def create_pretraining_data(data_folder: dsl.Input[dsl.Artifact], tracking_uri: str, experiment: str, data: dsl.Output[dsl.Dataset]):
    """Merge the shard records (read from the data folder) into its manifest and data card (published last)."""
    from components.core.console import configure_logging
    from components.core.tracking import Tracking
    from components.data.merge import merge_pretraining_data
    from pipelines import step_io

    configure_logging()
    uri = step_io.uri_of(data_folder)
    manifest = merge_pretraining_data(uri, tracking=Tracking(tracking_uri, experiment))
    counts = {f"{split}_instances": s["num_instances"] for split, s in manifest["splits"].items()}
    step_io.publish(data, uri, {**counts, "reused": manifest.get("reused", False)})


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_phase(
    data: dsl.Input[dsl.Dataset],
    vocab: dsl.Input[dsl.Artifact],
    artifact_root: str,
    pipeline_run_id: str,
    tracking_uri: str,
    experiment: str,
    model: dsl.Output[dsl.Model],
    model_size: str = "tiny",
    init_model: str = "",
    max_seq_length: int = 128,
    max_steps: int = 100,
    per_device_train_batch_size: int = 32,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 1e-4,
    warmup_steps: int = 10,
    weight_decay: float = 0.01,
    optimizer: str = "adamw",
    lr_scheduler_type: str = "linear",
    lr_power: float = 1.0,
    adam_epsilon: float = 1e-6,
    max_grad_norm: float = 1.0,
    seed: int = 42,
    logging_steps: int = 10,
    save_steps: int = 0,
    eval_steps: int = 0,
    per_device_eval_batch_size: int = 64,
    max_eval_batches: int = 20,
    save_total_limit: int = 2,
    pack_sequences: bool = True,
    mixed_precision: str = "auto",
    torch_compile: bool = False,
    peak_tflops: float = 0.0,
    processes: int = 1,
    num_nodes: int = 1,
    trainjob_template: str = "",
) -> str:
    """One pretraining phase (resuming from its last checkpoint after a retry); returns the model folder's URI."""
    from components.core.settings import pick
    from components.training.phase import train_phase
    from components.training.settings import LaunchSettings, TrainingSettings
    from pipelines import step_io

    uri, tracking = step_io.begin(pipeline_run_id, tracking_uri, experiment, artifact_root, f"phase-{max_seq_length}")
    summary = train_phase(step_io.uri_of(data), step_io.uri_of(vocab), uri, settings=pick(TrainingSettings, locals()), launch=pick(LaunchSettings, locals()),
                          tracking=tracking)
    step_io.publish(model, summary["model_uri"], summary)
    return summary["model_uri"]


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate(
    model_uri: str,
    data_128: dsl.Input[dsl.Dataset],
    data_512: dsl.Input[dsl.Dataset],
    registered_model_name: str,
    artifact_root: str,
    pipeline_run_id: str,
    tracking_uri: str,
    experiment: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
    split: str = "test",
    per_device_eval_batch_size: int = 64,
    max_eval_batches: int = 0,
    confidence_level: float = 0.95,
    bootstrap_resamples: int = 1000,
    bootstrap_seed: int = 0,
) -> str:
    """MLM and NSP metrics on the held-out split at 128 and 512, for the new model and the current champion; returns the evaluation folder."""
    from components.core import storage
    from components.core.settings import pick
    from components.evaluation.evaluate import evaluate as evaluate_step
    from components.evaluation.settings import EvaluationSettings
    from pipelines import step_io

    uri, tracking = step_io.begin(pipeline_run_id, tracking_uri, experiment, artifact_root, "evaluation")
    record = evaluate_step(model_uri, {128: step_io.uri_of(data_128), 512: step_io.uri_of(data_512)}, uri, registered_model_name=registered_model_name,
                           settings=pick(EvaluationSettings, locals()), tracking=tracking)
    step_io.publish_metrics(metrics, record["metrics"])
    step_io.publish_text(report, storage.join(uri, "report.md"))
    return uri


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register_model(
    model_uri: str,
    evaluation_uri: str,
    data_128: dsl.Input[dsl.Dataset],
    data_512: dsl.Input[dsl.Dataset],
    registered_model_name: str,
    pipeline_run_id: str,
    tracking_uri: str,
    experiment: str,
    report: dsl.Output[dsl.Markdown],
    promotion_metric: str = "mlm_accuracy_512",
    promotion_margin: float = 0.005,
    nsp_tolerance: float = 0.01,
    promotion_floor: float = 0.0,
    promotion_over_baseline: bool = True,
    promotion_dry_run: bool = False,
    require_probe: bool = False,
    probe_tolerance: float = 0.01,
    probe_uri: str = "",
) -> str:
    """Register the model (MLflow transformers flavour, fill-mask), let it challenge the champion, write the run report;
    returns the registration (name, version, decision and reasons) as JSON."""
    import json

    from components.core.settings import pick
    from components.registry.settings import PromotionSettings
    from components.registry.step import register_and_promote
    from pipelines import step_io

    _, tracking = step_io.begin(pipeline_run_id, tracking_uri, experiment)
    result = register_and_promote(model_uri, evaluation_uri, {128: step_io.uri_of(data_128), 512: step_io.uri_of(data_512)},
                                  registered_model_name=registered_model_name, settings=pick(PromotionSettings, locals()), tracking=tracking,
                                  probe_uri=probe_uri)
    step_io.publish_text(report, result["report_uri"])
    return json.dumps(result, sort_keys=True)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def probe(
    model_uri: str,
    dataset: str,
    registered_model_name: str,
    artifact_root: str,
    pipeline_run_id: str,
    tracking_uri: str,
    experiment: str,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str = "split",
    test_fraction: float = 0.2,
    pooling: str = "mean",
    max_length: int = 128,
    l2: float = 1e-3,
    max_iter: int = 200,
    fine_tune_steps: int = 0,
    fine_tune_learning_rate: float = 3e-5,
    batch_size: int = 32,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> str:
    """The downstream probe of the new model and the champion on a labeled dataset ('' skips it); returns the probe folder."""
    from components.core.settings import pick
    from components.evaluation.probe import probe as probe_step
    from components.evaluation.settings import ProbeSettings
    from pipelines import step_io

    uri, tracking = step_io.begin(pipeline_run_id, tracking_uri, experiment, artifact_root, "probe")
    probe_step(model_uri, dataset, uri, registered_model_name=registered_model_name, settings=pick(ProbeSettings, locals()), tracking=tracking)
    return uri
