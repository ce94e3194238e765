"""Promotion on real (tiny) models: noise is not promoted, a clear gain is, and the probe beats chance on the shipped set."""

import numpy as np
import pytest
import torch

from components.core import instances as instance_format
from components.core import models, storage
from components.core.batches import evaluation_batches
from components.training.stream import TrainingStream
from components.core.scoring import metrics_from, score_instances
from components.evaluation.evaluate import EvaluationSettings, compare_with_champion, flatten
from components.evaluation.probe import ProbeSettings, probe_model
from components.evaluation.probe_data import load_labeled
from components.registry.promotion import PromotionPolicy, decide
from tests.instance_factory import make_data, make_vocab

LENGTH = 64


def train(data_uri: str, vocab_uri: str, folder, *, seed: int, steps: int) -> str:
    """A tiny BERT trained by a plain loop (seeded; the product's trainer has its own tests)."""
    torch.manual_seed(seed)
    model = models.build_model("tiny", 2000)
    forward = models.MaskedPretrainingModel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    stream = TrainingStream(data_uri, instance_format.read_manifest(data_uri), batch_size=16, seed=seed)
    for _ in range(steps):
        batch = next(stream)
        mlm_loss, nsp_loss = models.pretraining_losses(*forward(*(batch[name] for name in models.MODEL_INPUTS)), batch)
        optimizer.zero_grad()
        (mlm_loss + nsp_loss).backward()
        optimizer.step()
    model.save_pretrained(str(folder))
    storage.download_dir(vocab_uri, folder)
    return str(folder)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Per-instance test results of: two models that differ only by seed, and a briefly trained one."""
    root = tmp_path_factory.mktemp("trusted")
    vocab = make_vocab(str(root / "vocab"), vocab_size=2000)
    data = make_data(str(root / "data"), vocab, max_seq_length=LENGTH, shards={"train": [256, 256], "test": [400]}, seed=5)
    manifest = instance_format.read_manifest(data)
    folders = {"seed1": train(data, vocab, root / "seed1", seed=1, steps=150), "seed2": train(data, vocab, root / "seed2", seed=2, steps=150),
               "brief": train(data, vocab, root / "brief", seed=1, steps=10)}
    results = {}
    for name, folder in folders.items():
        forward = models.MaskedPretrainingModel(models.load_model(folder))
        results[name] = {LENGTH: score_instances(forward, evaluation_batches(data, manifest, "test", 64), torch.device("cpu"))}
    return folders, results


def decision(results, challenger: str, champion: str, policy: PromotionPolicy):
    intervals = compare_with_champion(results[challenger], results[champion], EvaluationSettings(bootstrap_resamples=2000))
    metrics = {name: flatten({LENGTH: metrics_from(results[name][LENGTH])}) for name in (challenger, champion)}
    return decide(metrics[challenger], metrics[champion], policy, intervals), intervals, metrics


POLICY = PromotionPolicy(metric=f"mlm_accuracy_{LENGTH}", guard_metric=f"nsp_accuracy_{LENGTH}")


def test_a_challenger_better_only_by_noise_is_not_promoted_either_way(scored):
    _, results = scored
    forward, backward = decision(results, "seed2", "seed1", POLICY), decision(results, "seed1", "seed2", POLICY)
    for verdict, intervals, _ in (forward, backward):
        assert not verdict.promote
        assert intervals[f"mlm_accuracy_{LENGTH}"]["low"] <= 0 <= intervals[f"mlm_accuracy_{LENGTH}"]["high"]
        assert "lower bound not above the margin 0.0000" in verdict.reasons[0]


def test_a_clearly_better_challenger_is_promoted(scored):
    _, results = scored
    # 400 test sequences give an NSP interval about +-0.07 wide: a 1-point NSP tolerance could never be shown at this size.
    verdict, intervals, _ = decision(results, "seed1", "brief", PromotionPolicy(metric=POLICY.metric, guard_metric=POLICY.guard_metric, guard_tolerance=0.15))
    gain = intervals[f"mlm_accuracy_{LENGTH}"]
    assert verdict.promote, verdict.reasons
    assert gain["low"] > 0 and gain["instances"] == 400 and gain["units"] == int(results["seed1"][LENGTH]["masked"].sum())
    assert "lower bound above the margin" in verdict.reasons[0]
    assert not decision(results, "brief", "seed1", POLICY)[0].promote


def test_stored_per_instance_results_give_the_same_interval(scored, tmp_path):
    from components.evaluation import instance_results

    _, results = scored
    for name in ("seed1", "brief"):
        instance_results.save(str(tmp_path / f"{name}.npz"), results[name][LENGTH], "sha:test")
    loaded = {name: instance_results.load(str(tmp_path / f"{name}.npz")) for name in ("seed1", "brief")}
    assert loaded["seed1"][1] == "sha:test" and (tmp_path / "seed1.npz").stat().st_size < 10_000
    direct = instance_results.compare(results["seed1"][LENGTH], results["brief"][LENGTH], "mlm_accuracy")
    assert instance_results.compare(loaded["seed1"][0], loaded["brief"][0], "mlm_accuracy") == direct


def test_the_probe_beats_chance_on_the_shipped_set_with_a_briefly_trained_model(scored):
    folders, _ = scored
    settings = ProbeSettings()
    data = load_labeled("demo", text_column="text", label_column="label", split_column="split", test_fraction=0.2, seed=0)
    result = probe_model(folders["seed1"], data, settings, "seed1")
    majority = np.bincount(data.test_labels).max() / len(data.test_labels)
    assert len(data.classes) == 4 and majority < 0.3
    assert result["accuracy"] > majority + 0.3 and result["macro_f1"] > 0.5
