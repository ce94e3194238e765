"""The KFP components: thin wrappers that call into components.* (imports inside the body, no logic).

KFP ships only each function's own source to the pod, so every body imports
what it needs; the image (or, locally, the venv) has bertpipe installed. Big
outputs go to `artifact_root` through components.core.storage; the KFP artifacts
carry their URIs (pipelines.step_io).
"""

from typing import List

from kfp import dsl

from pipelines.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def export_vocab(
    artifact_root: str,
    pipeline_run_id: str,
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
    from components.vocab.export import VocabSettings, export_vocab
    from pipelines import step_io

    configure_logging()
    uri = step_io.output_uri(artifact_root, pipeline_run_id, "vocab")
    info = export_vocab(uri, source=vocab_source, corpus=corpus, settings=pick(VocabSettings, locals()),
                        corpus_settings=pick(CorpusSettings, locals()), tracking=Tracking(tracking_uri, experiment, pipeline_run_id))
    step_io.publish(vocab, uri, info)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_pretraining_data(
    corpus: str,
    artifact_root: str,
    pipeline_run_id: str,
    max_seq_length: int,
    max_predictions_per_seq: int,
    masked_lm_prob: float,
    short_seq_prob: float,
    dupe_factor: int,
    do_whole_word_mask: bool,
    dev_fraction: float,
    test_fraction: float,
    seed: int,
    shard_size_mb: float,
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
    """Split the corpus by document into train/dev/test shards of raw text; returns one work item per shard.

    Each item carries the settings and output folder too: kfp.local cannot loop
    over one output of a task that has several, so the plan has a single output.
    """
    import json
    from dataclasses import asdict

    from pipelines import step_io
    from components.core.console import configure_logging
    from components.core.corpus import CorpusSettings
    from components.core.settings import pick
    from components.data.create import DataSettings, plan_shards

    configure_logging()
    settings = DataSettings(
        max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq, masked_lm_prob=masked_lm_prob,
        short_seq_prob=short_seq_prob, dupe_factor=dupe_factor, do_whole_word_mask=do_whole_word_mask,
        dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed, shard_size_mb=shard_size_mb,
    )
    uri = step_io.output_uri(artifact_root, pipeline_run_id, f"data-{max_seq_length}")
    # Settings travel as a JSON string: kfp.local turns every number inside a dict into a float.
    settings_json = json.dumps(asdict(settings))
    return [{"shard": shard, "settings_json": settings_json, "output_uri": uri} for shard in plan_shards(corpus, uri, settings, pick(CorpusSettings, locals()))]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def create_pretraining_shard(work: dict, vocab: dsl.Input[dsl.Artifact]) -> dict:
    """Instances of one shard (Google's algorithm, seeded by shard), written as one Parquet file."""
    import json

    from pipelines import step_io
    from components.core.console import configure_logging
    from components.data.create import DataSettings, process_shard

    configure_logging()
    settings = DataSettings(**json.loads(work["settings_json"]))
    return process_shard(step_io.restore_ints(work["shard"]), step_io.uri_of(vocab), work["output_uri"], settings)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def create_pretraining_data(
    records: List[dict],
    plan: List[dict],
    corpus: str,
    vocab: dsl.Input[dsl.Artifact],
    pipeline_run_id: str,
    tracking_uri: str,
    experiment: str,
    data: dsl.Output[dsl.Dataset],
):
    """Merge the shard records into the data folder's manifest and data card (published last)."""
    import json

    from pipelines import step_io
    from components.core.console import configure_logging
    from components.data.create import DataSettings, corpus_fingerprint, merge_manifests
    from components.core.tracking import Tracking

    configure_logging()
    uri = plan[0]["output_uri"]
    manifest = merge_manifests(
        uri, step_io.restore_ints(records), corpus, step_io.uri_of(vocab), DataSettings(**json.loads(plan[0]["settings_json"])),
        corpus_fingerprint([step_io.restore_ints(item["shard"]) for item in plan]), tracking=Tracking(tracking_uri, experiment, pipeline_run_id),
    )
    step_io.publish(data, uri, {f"{split}_instances": s["num_instances"] for split, s in manifest["splits"].items()})


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_phase(
    data: dsl.Input[dsl.Dataset],
    vocab: dsl.Input[dsl.Artifact],
    artifact_root: str,
    pipeline_run_id: str,
    model_size: str,
    init_model: str,
    max_seq_length: int,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int,
    save_steps: int,
    seed: int,
    processes: int,
    num_nodes: int,
    trainjob_template: str,
    tracking_uri: str,
    experiment: str,
    model: dsl.Output[dsl.Model],
) -> str:
    """One pretraining phase (resuming from its last checkpoint after a retry); returns the model folder's URI."""
    from pipelines import step_io
    from components.core.console import configure_logging
    from components.core.tracking import Tracking
    from components.training.launch import run_phase

    configure_logging()
    arguments = dict(
        data_uri=step_io.uri_of(data),
        vocab_uri=step_io.uri_of(vocab),
        output_uri=step_io.output_uri(artifact_root, pipeline_run_id, f"phase-{max_seq_length}"),
        model_size=model_size,
        init_model=init_model,
        max_seq_length=max_seq_length,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        save_steps=save_steps,
        seed=seed,
    )
    tracking = Tracking(tracking_uri, experiment, pipeline_run_id)
    summary = run_phase(arguments, tracking, processes=processes, num_nodes=num_nodes, trainjob_template=trainjob_template)
    step_io.publish(model, summary["model_uri"], summary)
    return summary["model_uri"]


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
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
) -> str:
    """MLM and NSP metrics on the held-out split at 128 and 512, for the new model and the current champion; returns the evaluation folder."""
    from components.core import storage
    from components.core.console import configure_logging
    from components.core.settings import pick
    from components.core.tracking import Tracking
    from components.evaluation.evaluate import EvaluationSettings, evaluate as evaluate_step
    from pipelines import step_io

    configure_logging()
    uri = step_io.output_uri(artifact_root, pipeline_run_id, "evaluation")
    record = evaluate_step(model_uri, {128: step_io.uri_of(data_128), 512: step_io.uri_of(data_512)}, uri, registered_model_name=registered_model_name,
                           settings=pick(EvaluationSettings, locals()), tracking=Tracking(tracking_uri, experiment, pipeline_run_id))
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
    promotion_margin: float = 0.0,
    nsp_tolerance: float = 0.01,
    promotion_floor: float = 0.0,
    promotion_dry_run: bool = False,
) -> str:
    """Register the model (MLflow transformers flavour, fill-mask), let it challenge the champion, write the run report;
    returns the registration (name, version, decision and reasons) as JSON."""
    import json

    from components.core.console import configure_logging
    from components.core.settings import pick
    from components.core.tracking import Tracking
    from components.registry.promotion import PromotionSettings
    from components.registry.step import register_and_promote
    from pipelines import step_io

    configure_logging()
    result = register_and_promote(model_uri, evaluation_uri, {128: step_io.uri_of(data_128), 512: step_io.uri_of(data_512)},
                                  registered_model_name=registered_model_name, settings=pick(PromotionSettings, locals()),
                                  tracking=Tracking(tracking_uri, experiment, pipeline_run_id))
    step_io.publish_text(report, result["report_uri"])
    return json.dumps(result, sort_keys=True)
