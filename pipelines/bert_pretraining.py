"""The bert-pretraining pipeline: vocab -> data(128), data(512) -> phase 128 -> phase 512 -> evaluate -> register.

Google's recipe: most steps at 128 tokens, a short second phase at 512 that
starts from phase 1's weights with a fresh optimizer and schedule. Both data
steps split the corpus by document hash the same way, so evaluation at either
length only sees held-out documents.
"""

from typing import NamedTuple

from kfp import dsl

from components import kfp_components as steps

PIPELINE_NAME = "bert-pretraining"
PipelineOutputs = NamedTuple("PipelineOutputs", [("model_version", str), ("metrics_json", str), ("model_uri", str)])


@dsl.pipeline(name=PIPELINE_NAME, description="BERT pretraining (masked LM + NSP): vocab, data, two phases, evaluation, registration")
def bert_pretraining(
    artifact_root: str,
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
    phase1_steps: int = 900,
    phase1_batch_size: int = 32,
    phase1_learning_rate: float = 1e-4,
    phase1_warmup_steps: int = 90,
    phase2_steps: int = 100,
    phase2_batch_size: int = 8,
    phase2_learning_rate: float = 5e-5,
    phase2_warmup_steps: int = 10,
    train_seed: int = 42,
    tracking_uri: str = "sqlite:///mlflow.db",
    experiment: str = "bert-pretraining",
    registered_model_name: str = "bert-pretraining",
) -> PipelineOutputs:
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    tracking = dict(tracking_uri=tracking_uri, experiment=experiment)

    vocab = steps.export_vocab(
        artifact_root=artifact_root, pipeline_run_id=run_id, vocab_source=vocab_source, corpus=corpus,
        vocab_size=vocab_size, lowercase=lowercase, **tracking,
    ).set_display_name("export-vocab")

    data = {}
    for length, max_predictions in ((128, 20), (512, 80)):
        data[length] = steps.create_pretraining_data(
            corpus=corpus, vocab=vocab.outputs["vocab"], artifact_root=artifact_root, pipeline_run_id=run_id,
            max_seq_length=length, max_predictions_per_seq=max_predictions, masked_lm_prob=masked_lm_prob,
            short_seq_prob=short_seq_prob, dupe_factor=dupe_factor, do_whole_word_mask=do_whole_word_mask,
            dev_fraction=dev_fraction, test_fraction=test_fraction, seed=data_seed, **tracking,
        ).set_display_name(f"create-pretraining-data-{length}")

    phase1 = steps.train_phase(
        data=data[128].outputs["data"], vocab=vocab.outputs["vocab"], artifact_root=artifact_root, pipeline_run_id=run_id,
        model_size=model_size, init_model=init_checkpoint, max_seq_length=128, max_steps=phase1_steps,
        batch_size=phase1_batch_size, learning_rate=phase1_learning_rate, warmup_steps=phase1_warmup_steps,
        seed=train_seed, **tracking,
    ).set_display_name("train-phase-128")

    phase2 = steps.train_phase(
        data=data[512].outputs["data"], vocab=vocab.outputs["vocab"], artifact_root=artifact_root, pipeline_run_id=run_id,
        model_size=model_size, init_model=phase1.outputs["Output"], max_seq_length=512, max_steps=phase2_steps,
        batch_size=phase2_batch_size, learning_rate=phase2_learning_rate, warmup_steps=phase2_warmup_steps,
        seed=train_seed, **tracking,
    ).set_display_name("train-phase-512")

    evaluation = steps.evaluate(
        model_uri=phase2.outputs["Output"], data_128=data[128].outputs["data"], data_512=data[512].outputs["data"],
        artifact_root=artifact_root, pipeline_run_id=run_id, **tracking,
    ).set_display_name("evaluate")

    registration = steps.register_model(
        model_uri=phase2.outputs["Output"], metrics_json=evaluation.outputs["Output"],
        registered_model_name=registered_model_name, pipeline_run_id=run_id, **tracking,
    ).set_display_name("register-model")

    for task in (phase1, phase2, registration):
        task.set_caching_options(False)

    return PipelineOutputs(registration.output, evaluation.outputs["Output"], phase2.outputs["Output"])
