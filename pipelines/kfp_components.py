"""The KFP components: thin wrappers that call into components.* (imports inside the body, no logic).

KFP ships only each function's own source to the pod, so every body imports
what it needs; the image (or, locally, the venv) has bertpipe installed. Big
outputs go to `artifact_root` through components.core.storage; the KFP artifacts
carry their URIs (pipelines.step_io).
"""

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
):
    """Export the vocab of a pretrained tokenizer (vocab_source), or train a WordPiece vocab on the corpus."""
    from components.core.console import configure_logging
    from components.core.settings import pick
    from components.core.tracking import Tracking
    from components.vocab.export import VocabSettings, export_vocab
    from pipelines import step_io

    configure_logging()
    uri = step_io.output_uri(artifact_root, pipeline_run_id, "vocab")
    info = export_vocab(uri, source=vocab_source, corpus=corpus, settings=pick(VocabSettings, locals()),
                        tracking=Tracking(tracking_uri, experiment, pipeline_run_id))
    step_io.publish(vocab, uri, info)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_pretraining_data(
    corpus: str,
    vocab: dsl.Input[dsl.Artifact],
    artifact_root: str,
    pipeline_run_id: str,
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
) -> list:
    """Split the corpus by document into shards of raw text, written with the plan to the data folder; returns the shard names.

    The names ("train-00012") are the ParallelFor's work items: a few bytes each, whatever
    the corpus; each shard task reads its documents and the settings from the data folder.
    """
    from components.core.console import configure_logging
    from components.core.settings import pick
    from components.data.settings import DataSettings
    from components.data.split import plan_pretraining_data as plan
    from pipelines import step_io

    configure_logging()
    return plan(corpus, step_io.uri_of(vocab), step_io.data_uri(artifact_root, pipeline_run_id, max_seq_length), pick(DataSettings, locals()))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def create_pretraining_shard(shard: str, artifact_root: str, pipeline_run_id: str, max_seq_length: int):
    """Instances of one planned shard (Google's algorithm, seeded by shard), written as one Parquet file."""
    from components.core.console import configure_logging
    from components.data.shard import create_pretraining_shard as make_shard
    from pipelines import step_io

    configure_logging()
    make_shard(step_io.data_uri(artifact_root, pipeline_run_id, max_seq_length), shard)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def create_pretraining_data(
    artifact_root: str,
    pipeline_run_id: str,
    max_seq_length: int,
    tracking_uri: str,
    experiment: str,
    data: dsl.Output[dsl.Dataset],
):
    """Merge the shard records (read from the data folder) into its manifest and data card (published last)."""
    from components.core.console import configure_logging
    from components.core.tracking import Tracking
    from components.data.merge import merge_pretraining_data
    from pipelines import step_io

    configure_logging()
    uri = step_io.data_uri(artifact_root, pipeline_run_id, max_seq_length)
    manifest = merge_pretraining_data(uri, tracking=Tracking(tracking_uri, experiment, pipeline_run_id))
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
) -> str:
    """MLM and NSP metrics on the held-out test split at 128 and 512, for the new model and the current champion."""
    import json

    from pipelines import step_io
    from components.core import storage
    from components.evaluation.champion import evaluate_champion
    from components.core.console import configure_logging
    from components.evaluation.evaluate import evaluate as run_evaluation
    from components.core.tracking import Tracking

    configure_logging()
    tracking = Tracking(tracking_uri, experiment, pipeline_run_id)
    uri = step_io.output_uri(artifact_root, pipeline_run_id, "evaluation")
    data_uris = {128: step_io.uri_of(data_128), 512: step_io.uri_of(data_512)}
    results = run_evaluation(model_uri, data_uris, uri, tracking=tracking)
    champion_version, champion_metrics = evaluate_champion(registered_model_name, data_uris, storage.join(uri, "champion"), tracking=tracking)
    for name, value in results.items():
        metrics.log_metric(name, value)
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(storage.read_text(storage.join(uri, "report.md")))
    return json.dumps({"challenger": results, "champion_version": champion_version, "champion": champion_metrics}, sort_keys=True)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register_model(
    model_uri: str,
    evaluation_json: str,
    data_128: dsl.Input[dsl.Dataset],
    data_512: dsl.Input[dsl.Dataset],
    registered_model_name: str,
    promotion_metric: str,
    promotion_margin: float,
    nsp_tolerance: float,
    promotion_floor: float,
    promotion_dry_run: bool,
    phase1_steps: int,
    phase2_steps: int,
    artifact_root: str,
    pipeline_run_id: str,
    tracking_uri: str,
    experiment: str,
    report: dsl.Output[dsl.Markdown],
) -> str:
    """Register the model (MLflow transformers flavour, fill-mask) and let it challenge the champion; returns "name/version"."""
    import json

    from pipelines import step_io
    from components.core.console import configure_logging
    from components.core.instances import manifest_sha256
    from components.registry.promotion import PromotionPolicy, register_and_promote
    from components.registry.run_report import write_run_report
    from components.core.tracking import Tracking

    configure_logging()
    evaluation = json.loads(evaluation_json)
    registered = register_and_promote(
        model_uri,
        registered_model_name,
        tracking=Tracking(tracking_uri, experiment, pipeline_run_id),
        tags={
            "bertpipe.data_128_manifest_sha256": manifest_sha256(step_io.uri_of(data_128)),
            "bertpipe.data_512_manifest_sha256": manifest_sha256(step_io.uri_of(data_512)),
            "bertpipe.phase1_steps": str(phase1_steps),
            "bertpipe.phase2_steps": str(phase2_steps),
        },
        metrics=evaluation["challenger"],
        champion_version=evaluation["champion_version"],
        champion_metrics=evaluation["champion"],
        policy=PromotionPolicy(metric=promotion_metric, margin=promotion_margin, guard_tolerance=nsp_tolerance, floor=promotion_floor),
        dry_run=promotion_dry_run,
    )
    text = write_run_report(
        step_io.run_uri(artifact_root, pipeline_run_id), step_io.output_uri(artifact_root, pipeline_run_id, "evaluation"),
        evaluation["challenger"], evaluation["champion_version"], evaluation["champion"], registered,
    )
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return f"{registered['name']}/{registered['version']}"
