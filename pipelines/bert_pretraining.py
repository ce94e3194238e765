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

from components.core.recipe import PHASES
from components.core.settings import field_types
from components.data.settings import DataSettings
from pipelines import kfp_components as steps
from pipelines.kubernetes import ClusterSettings, apply_cpu_step_settings, apply_evaluation_settings, apply_training_settings
from pipelines.trainjob import trainjob_template

PIPELINE_NAME = "bert-pretraining"
MAX_PARALLEL_SHARDS = 16  # shard pods at once per sequence length (KFP fixes it at compile time)
DATA_SETTINGS = tuple(field_types(DataSettings))
# registration: the register step's result as JSON (name, version, decision, reasons, report URI); evaluation_uri: its metrics.json's folder.
# vocab, data_*, phase_*: each step's artifact, whose metadata says whether it was reused (the run's summary shows it).
PipelineOutputs = NamedTuple("PipelineOutputs", [
    ("registration", str), ("evaluation_uri", str), ("model_uri", str), ("vocab", dsl.Artifact),
    ("data_128", dsl.Dataset), ("data_512", dsl.Dataset), ("phase_128", dsl.Model), ("phase_512", dsl.Model),
])


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

    def configure(task, kind: str, cached: bool = True):
        """Cluster settings for a task of `kind`; `cached=False`: never cached, whatever the settings say."""
        if settings is not None:
            if kind == "training" and not multi_node:
                apply_training_settings(task, settings)
            elif kind == "evaluation":
                apply_evaluation_settings(task, settings)
            else:  # a multi-node phase's task only launches the TrainJob and waits: a CPU pod
                apply_cpu_step_settings(task, settings, kind)
        if not cached:
            task.set_caching_options(enable_caching=False)
        return task

    @dsl.pipeline(name="pretraining-data", description="Plan shards by document, make each shard's instances in its own task, merge the manifest")
    def pretraining_data(
        corpus: str,
        vocab: dsl.Input[dsl.Artifact],
        artifact_root: str,
        fingerprint: str,
        tracking_uri: str,
        experiment: str,
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
    ) -> dsl.Dataset:
        # Tasks hand each other only shard names: the plan, the documents and the shard records stay
        # in the data folder, so no task's input grows with the corpus (one argument is capped at 128 KiB).
        # The folder is content-keyed and no task takes the run id: Kubeflow's cache can hit on every one.
        given = locals()
        settings = {name: given[name] for name in DATA_SETTINGS}
        plan = steps.plan_pretraining_data(corpus=corpus, vocab=vocab, **settings, **corpus_reading(given),
                                           artifact_root=artifact_root, fingerprint=fingerprint)
        configure(plan.set_display_name("plan-shards"), "data")
        folder = plan.outputs["data_folder"]
        with dsl.ParallelFor(plan.outputs["Output"], parallelism=MAX_PARALLEL_SHARDS) as shard_name:
            shard = steps.create_pretraining_shard(shard=shard_name, data_folder=folder)
            configure(shard.set_display_name("create-shard"), "data")
        # After the whole loop, without a fan-in of its outputs (dsl.Collected).
        merge = steps.create_pretraining_data(data_folder=folder, tracking_uri=tracking_uri, experiment=experiment).after(shard)
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
        per_word_replacement: bool = False,
        dynamic_masking: bool = False,
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
        phase1_gradient_accumulation_steps: int = 1,
        phase2_steps: int = 100,
        phase2_batch_size: int = 8,
        phase2_learning_rate: float = 5e-5,
        phase2_warmup_steps: int = 10,
        phase2_gradient_accumulation_steps: int = 1,
        train_seed: int = 42,
        save_steps: int = 500,
        save_total_limit: int = 2,
        weight_decay: float = 0.01,
        optimizer: str = "adamw",
        lr_scheduler_type: str = "linear",
        lr_power: float = 1.0,
        adam_epsilon: float = 1e-6,
        max_grad_norm: float = 1.0,
        logging_steps: int = 10,
        eval_steps: int = 0,
        pack_sequences: bool = True,
        mixed_precision: str = "auto",
        torch_compile: bool = False,
        peak_tflops: float = 0.0,
        experiment: str = "bert-pretraining",
        registered_model_name: str = "bert-pretraining",
        promotion_metric: str = "mlm_accuracy_512",
        promotion_margin: float = 0.005,
        nsp_tolerance: float = 0.01,
        promotion_floor: float = 0.0,
        promotion_over_baseline: bool = True,
        promotion_dry_run: bool = False,
        require_probe: bool = False,
        probe_tolerance: float = 0.01,
        probe_dataset: str = "",
        confidence_level: float = 0.95,
        resume_run_id: str = "",
    ) -> PipelineOutputs:
        # Only training, evaluation and registration take the run id (never cached); vocab and data are keyed
        # by their inputs' content, fingerprinted by an uncached task each run, so a changed corpus misses the cache.
        resolved = steps.resolve_run(artifact_root=artifact_root, resume_run_id=resume_run_id, pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        configure(resolved.set_display_name("resolve-run"), "registry", cached=False)
        run_id = resolved.output
        where = dict(artifact_root=artifact_root, pipeline_run_id=run_id, tracking_uri=tracking_uri, experiment=experiment)
        tracking = dict(tracking_uri=tracking_uri, experiment=experiment)

        reading = corpus_reading(locals())
        fingerprints = steps.fingerprint_inputs(corpus=corpus, vocab_source=vocab_source)
        configure(fingerprints.set_display_name("fingerprint-inputs"), "vocab", cached=False)
        vocab = steps.export_vocab(vocab_source=vocab_source, corpus=corpus, vocab_size=vocab_size, lowercase=lowercase, **reading, **tracking,
                                   artifact_root=artifact_root, fingerprint=fingerprints.outputs["vocab"])
        configure(vocab.set_display_name("export-vocab"), "vocab")

        data = {}
        data_settings = dict(
            masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob, dupe_factor=dupe_factor, do_whole_word_mask=do_whole_word_mask,
            per_word_replacement=per_word_replacement, dynamic_masking=dynamic_masking, dev_fraction=dev_fraction,
            test_fraction=test_fraction, seed=data_seed, shard_size_mb=shard_size_mb,
        )
        for phase in PHASES:
            data[phase.max_seq_length] = pretraining_data(
                corpus=corpus, vocab=vocab.outputs["vocab"], max_seq_length=phase.max_seq_length, max_predictions_per_seq=phase.max_predictions_per_seq,
                **data_settings, **reading, **tracking, artifact_root=artifact_root, fingerprint=fingerprints.outputs["corpus"],
            ).set_display_name(f"create-pretraining-data-{phase.max_seq_length}")

        # Phase 512 starts from phase 128's weights, with a fresh optimizer and schedule.
        per_phase = {
            1: dict(max_steps=phase1_steps, per_device_train_batch_size=phase1_batch_size, learning_rate=phase1_learning_rate,
                    warmup_steps=phase1_warmup_steps, gradient_accumulation_steps=phase1_gradient_accumulation_steps),
            2: dict(max_steps=phase2_steps, per_device_train_batch_size=phase2_batch_size, learning_rate=phase2_learning_rate,
                    warmup_steps=phase2_warmup_steps, gradient_accumulation_steps=phase2_gradient_accumulation_steps),
        }
        training = dict(
            model_size=model_size, seed=train_seed, save_steps=save_steps, save_total_limit=save_total_limit, weight_decay=weight_decay,
            optimizer=optimizer, lr_scheduler_type=lr_scheduler_type, lr_power=lr_power, adam_epsilon=adam_epsilon,
            max_grad_norm=max_grad_norm, logging_steps=logging_steps, eval_steps=eval_steps, pack_sequences=pack_sequences,
            mixed_precision=mixed_precision, torch_compile=torch_compile, peak_tflops=peak_tflops,
        )
        init_model = init_checkpoint
        phases = {}
        for recipe_phase in PHASES:
            length = recipe_phase.max_seq_length
            phase = steps.train_phase(
                data=data[length].output, vocab=vocab.outputs["vocab"], init_model=init_model, max_seq_length=length,
                **per_phase[recipe_phase.number], **training, **placement, **where,
            )
            configure(phase.set_display_name(f"train-phase-{length}"), "training", cached=False)
            init_model = phase.outputs["Output"]
            phases[length] = phase.outputs["model"]
        model_uri = init_model

        evaluation = steps.evaluate(
            model_uri=model_uri, data_128=data[128].output, data_512=data[512].output,
            registered_model_name=registered_model_name, confidence_level=confidence_level, **where,
        )
        configure(evaluation.set_display_name("evaluate"), "evaluation", cached=False)
        # The downstream probe, beside the evaluation; with no probe_dataset it only records that it was skipped.
        probe = steps.probe(model_uri=model_uri, dataset=probe_dataset, registered_model_name=registered_model_name,
                            confidence_level=confidence_level, **where)
        configure(probe.set_display_name("probe"), "evaluation", cached=False)

        registration = steps.register_model(
            model_uri=model_uri, evaluation_uri=evaluation.outputs["Output"], data_128=data[128].output,
            data_512=data[512].output, registered_model_name=registered_model_name, promotion_metric=promotion_metric,
            promotion_margin=promotion_margin, nsp_tolerance=nsp_tolerance, promotion_floor=promotion_floor,
            promotion_over_baseline=promotion_over_baseline, promotion_dry_run=promotion_dry_run, require_probe=require_probe, probe_tolerance=probe_tolerance,
            probe_uri=probe.outputs["Output"], pipeline_run_id=run_id, tracking_uri=tracking_uri, experiment=experiment,
        )
        configure(registration.set_display_name("register-model"), "registry", cached=False)

        return PipelineOutputs(registration.outputs["Output"], evaluation.outputs["Output"], model_uri, vocab.outputs["vocab"],
                               data[128].output, data[512].output, phases[128], phases[512])

    return bert_pretraining, pretraining_data


def build_pipeline(settings: Optional[ClusterSettings] = None, locations: Optional[dict] = None):
    """The pipeline, with `settings` applied to every task (None: no cluster settings, for local runs)."""
    return build_pipelines(settings, locations)[0]


bert_pretraining, pretraining_data = build_pipelines()
