"""Weight-decay groups, the LAMB update and the learning-rate schedules, checked by hand."""

import math

import pytest
import torch

from components.core import models
from components.core.errors import BertpipeError
from components.training.optimization import Lamb, lr_factor, make_scheduler, parameter_groups


def test_weight_decay_skips_biases_and_layer_norms():
    torch.manual_seed(0)
    model = models.build_model("tiny", 100)
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"bert.embeddings.LayerNorm.weight", "cls.predictions.bias"}
    assert "bert.encoder.layer.0.attention.self.query.weight" in {names[id(p)] for p in decay["params"]}


def test_lamb_scales_adam_update_by_trust_ratio():
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = Lamb([weight], lr=0.1, eps=1e-6, weight_decay=0.0)
    weight.grad = torch.tensor([1.0, 1.0])
    optimizer.step()
    # Step 1 of Adam with bias correction: update = g / (|g| + eps) = [1, 1] (up to eps); trust = 5 / sqrt(2).
    update = 1 / (1 + 1e-6)
    expected = torch.tensor([3.0, 4.0]) - 0.1 * (5 / math.sqrt(2 * update**2)) * update
    torch.testing.assert_close(weight.detach(), expected)


def test_lamb_weight_decay_enters_the_update():
    weight = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = Lamb([weight], lr=0.1, weight_decay=0.5)
    weight.grad = torch.tensor([0.0, 0.0])
    optimizer.step()
    # Zero gradient: update = 0.5 * w, trust = |w| / |0.5 w| = 2, so w <- w - 0.1 * 2 * 0.5 w = 0.9 w.
    torch.testing.assert_close(weight.detach(), torch.tensor([2.7, 3.6]))


@pytest.mark.parametrize(
    ("schedule", "power", "expected"),
    [
        ("linear", 1.0, [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]),
        ("polynomial", 2.0, [0.5, 1.0, 1.0, 0.5625, 0.25, 0.0625, 0.0]),
        ("constant", 1.0, [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_schedules_warm_up_then_decay(schedule, power, expected):
    steps = [0, 1, 2, 4, 6, 8, 10]
    assert [lr_factor(s, warmup_steps=2, total_steps=10, schedule=schedule, power=power) for s in steps] == pytest.approx(expected)


def test_unknown_schedule_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(BertpipeError, match="unknown lr_scheduler_type 'cosine'"):
        make_scheduler(optimizer, warmup_steps=0, total_steps=1, schedule="cosine")
