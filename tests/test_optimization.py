"""Weight-decay groups, the LAMB update and the learning-rate schedules, checked by hand; AdamW without torch._dynamo."""

import json
import math
import subprocess
import sys

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


def adamw_run(code: str) -> dict:
    """Three AdamW steps (make_optimizer's) in a fresh interpreter after `code`: final weights, state and whether dynamo got loaded."""
    probe = f"""
import json, sys, torch
{code}
from components.training.optimization import make_optimizer
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
optimizer = make_optimizer(model, "adamw", 0.1, 0.01)
for _ in range(3):
    model(torch.randn(5, 4)).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()
optimizer.load_state_dict(optimizer.state_dict())
print(json.dumps({{"weights": [p.tolist() for p in model.parameters()], "steps": [float(s["step"]) for s in optimizer.state.values()],
                  "grad_enabled": torch.is_grad_enabled(), "dynamo": "torch._dynamo" in sys.modules}}))
"""
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(finished.stdout.strip().splitlines()[-1])


def test_adamw_runs_without_importing_dynamo_and_steps_as_with_it():
    lazy = adamw_run("")
    eager = adamw_run("import torch._dynamo")  # torch's own wrappers, as under torch_compile
    assert lazy["dynamo"] is False and eager["dynamo"] is True
    assert lazy["weights"] == eager["weights"] and lazy["steps"] == eager["steps"] == [3.0] * 4
    assert lazy["grad_enabled"] is eager["grad_enabled"] is True
