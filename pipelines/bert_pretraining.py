"""The bert-pretraining pipeline: vocab -> data(128), data(512) -> phase 128 -> phase 512 -> evaluate -> register.

Google's recipe: most steps at 128 tokens, a short second phase at 512 that
starts from phase 1's weights with a fresh optimizer and schedule. Both data
steps split the corpus by document hash the same way, so evaluation at either
length only sees held-out documents. The last step registers the model and lets
it challenge the registry's champion, evaluated on the same test data.

Kubernetes settings (images, GPUs, node pools, secrets, retries, caching) are
chosen at compile time: `build_pipeline(ClusterSettings(...))`. Without them
(`bert_pretraining`, what `bertpipe run` uses) the tasks carry none, since the
local runner ignores them anyway.
"""

# No `from __future__ import annotations`: KFP reads the pipeline's annotations as types.
from typing import NamedTuple, Optional

from kfp import dsl

from pipelines import kfp_components as steps
from pipelines.kubernetes import ClusterSettings, apply_cpu_step_settings, apply_training_settings
from pipelines.trainjob import trainjob_template

PIPELINE_NAME = "bert-pretraining"
MAX_PARALLEL_SHARDS = 16  # shard pods at once per sequence length (KFP fixes it at compile time)
# registration: the register step's result as JSON (name, version, decision, reasons, report URI); evaluation_uri: its metrics.json's folder.
PipelineOutputs = NamedTuple("PipelineOutputs", [("registration", str), ("evaluation_uri", str), ("model_uri", str)])


def corpus_reading(namespace: dict) -> dict:
    """The CorpusSettings fields among a pipeline's parameters, to pass on to the tasks that read the corpus."""
    import dataclasses

    from components.core.corpus import CorpusSettings

    return {f.name: namespace[f.name] for f in dataclasses.fields(CorpusSettings)}


def build_pipelines(settings: Optional[ClusterSettings] = None, locations: Optional[dict] = None):
    """The pipeline and its pretraining-data sub-pipeline, with `settings` applied to every task.

    `locations` = defaults of artifact_root and tracking_uri compiled into the package (else empty: every
    run must pass them; `submit` refuses a run without them, pipelines.locations)."""
    where_default = {"artifact_root": "", "tracking_uri": "", **(locations or {})}

    multi_node = settings is not None and settings.num_nodes > 1
    # Compile-time constants of the training tasks: how many processes, and where they run.
    placement = dict(
        processes=settings.gpus_per_node if settings else 1,
        num_nodes=settings.num_nodes if settings else 1,
        trainjob_template=trainjob_template(settings) if multi_node else "",
    )

    def configure(task, kind: str):
        if settings is None:
            return task
        if kind == "training" and not multi_node:
            return apply_training_settings(task, settings)
        # A multi-node phase's task only launches the TrainJob and waits: a CPU pod.
        return apply_cpu_step_settings(task, settings, kind)

    @dsl.pipeline(name="pretraining-data", description="Plan shards by document, make each shard's instances in its own task, merge the manifest")
    def pretraining_data(
        corpus: str,
        vocab: dsl.Input[dsl.Artifact],
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
        artifact_root: str,
        pipeline_run_id: str,
        tracking_uri: str,
        experiment: str,
        corpus_format: str = "auto",
        text_column: str = "text",
        sentences: str = "split",
        normalize_unicode: bool = True,
        normalize_whitespace: bool = True,
        min_document_chars: int = 50,
        dedup: bool = True,
        clean_text_format: bool = False,
        skip_bad_records: bool = False,
    ) -> dsl.Dataset:
        plan = steps.plan_pretraining_data(
            corpus=corpus, artifact_root=artifact_root, pipeline_run_id=pipeline_run_id, max_seq_length=max_seq_length,
            max_predictions_per_seq=max_predictions_per_seq, masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
            dupe_factor=dupe_factor, do_whole_word_mask=do_whole_word_mask, dev_fraction=dev_fraction,
            test_fraction=test_fraction, seed=seed, shard_size_mb=shard_size_mb, **corpus_reading(locals()),
        )
        configure(plan.set_display_name("plan-shards"), "data")
        with dsl.ParallelFor(plan.output, parallelism=MAX_PARALLEL_SHARDS) as work:
            shard = steps.create_pretraining_shard(work=work, vocab=vocab)
            configure(shard.set_display_name("create-shard"), "data")
        merge = steps.create_pretraining_data(
            records=dsl.Collected(shard.output), plan=plan.output, corpus=corpus, vocab=vocab, pipeline_run_id=pipeline_run_id,
            tracking_uri=tracking_uri, experiment=experiment,
        )
        configure(merge.set_display_name("merge-manifest"), "data")
        return merge.outputs["data"]

    @dsl.pipeline(name=PIPELINE_NAME, description="BERT pretraining (masked LM + NSP): vocab, data, two phases, evaluation, registration")
    def bert_pretraining(
        artifact_root: str = where_default["artifact_root"],
        tracking_uri: str = where_default["tracking_uri"],
        corpus: str = "demo",
        vocab_source: str = "",
        vocab_size: int = 8000,
        lowercase: str = "auto",
        model_size: str = "tiny",
        init_checkpoint: str = "",
        masked_lm_prob: float = 0.15,
        short_seq_prob: float = 0.1,
        dupe_factor: int = 5,
        do_whole_word_mask: bool = True,
        dev_fraction: float = 0.02,
        test_fraction: float = 0.02,
        data_seed: int = 12345,
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
        phase1_steps: int = 900,
        phase1_batch_size: int = 32,
        phase1_learning_rate: float = 1e-4,
        phase1_warmup_steps: int = 90,
        phase2_steps: int = 100,
        phase2_batch_size: int = 8,
        phase2_learning_rate: float = 5e-5,
        phase2_warmup_steps: int = 10,
        train_seed: int = 42,
        save_steps: int = 500,
        experiment: str = "bert-pretraining",
        registered_model_name: str = "bert-pretraining",
        promotion_metric: str = "mlm_accuracy_512",
        promotion_margin: float = 0.0,
        nsp_tolerance: float = 0.01,
        promotion_floor: float = 0.0,
        promotion_dry_run: bool = False,
    ) -> PipelineOutputs:
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        where = dict(artifact_root=artifact_root, pipeline_run_id=run_id, tracking_uri=tracking_uri, experiment=experiment)

        reading = corpus_reading(locals())
        vocab = steps.export_vocab(vocab_source=vocab_source, corpus=corpus, vocab_size=vocab_size, lowercase=lowercase, **reading, **where)
        configure(vocab.set_display_name("export-vocab"), "vocab")

        data = {}
        for length, max_predictions in ((128, 20), (512, 80)):
            data[length] = pretraining_data(
                corpus=corpus, vocab=vocab.outputs["vocab"], max_seq_length=length, max_predictions_per_seq=max_predictions,
                masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob, dupe_factor=dupe_factor, do_whole_word_mask=do_whole_word_mask,
                dev_fraction=dev_fraction, test_fraction=test_fraction, seed=data_seed, shard_size_mb=shard_size_mb, **reading, **where,
            ).set_display_name(f"create-pretraining-data-{length}")

        # Phase 512 starts from phase 128's weights, with a fresh optimizer and schedule.
        init_model = init_checkpoint
        for length, max_steps, batch_size, learning_rate, warmup_steps in (
            (128, phase1_steps, phase1_batch_size, phase1_learning_rate, phase1_warmup_steps),
            (512, phase2_steps, phase2_batch_size, phase2_learning_rate, phase2_warmup_steps),
        ):
            phase = steps.train_phase(
                data=data[length].output, vocab=vocab.outputs["vocab"], model_size=model_size, init_model=init_model,
                max_seq_length=length, max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
                warmup_steps=warmup_steps, save_steps=save_steps, seed=train_seed, **placement, **where,
            )
            configure(phase.set_display_name(f"train-phase-{length}"), "training")
            init_model = phase.outputs["Output"]
        model_uri = init_model

        evaluation = steps.evaluate(
            model_uri=model_uri, data_128=data[128].output, data_512=data[512].output,
            registered_model_name=registered_model_name, **where,
        )
        configure(evaluation.set_display_name("evaluate"), "evaluation")

        registration = steps.register_model(
            model_uri=model_uri, evaluation_uri=evaluation.outputs["Output"], data_128=data[128].output,
            data_512=data[512].output, registered_model_name=registered_model_name, promotion_metric=promotion_metric,
            promotion_margin=promotion_margin, nsp_tolerance=nsp_tolerance, promotion_floor=promotion_floor,
            promotion_dry_run=promotion_dry_run, pipeline_run_id=run_id, tracking_uri=tracking_uri, experiment=experiment,
        )
        configure(registration.set_display_name("register-model"), "registry")

        return PipelineOutputs(registration.outputs["Output"], evaluation.outputs["Output"], model_uri)

    return bert_pretraining, pretraining_data


def build_pipeline(settings: Optional[ClusterSettings] = None, locations: Optional[dict] = None):
    """The pipeline, with `settings` applied to every task (None: no cluster settings, for local runs)."""
    return build_pipelines(settings, locations)[0]


bert_pretraining, pretraining_data = build_pipelines()
