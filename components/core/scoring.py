"""MLM/NSP metrics of a model over batches of instances: shared by training's dev validation and the evaluate step.

Metrics (keys of `pretraining_metrics`):
    mlm_loss          mean cross-entropy over masked tokens
    perplexity        exp(mlm_loss)
    mlm_accuracy      top-1 accuracy over masked tokens
    mlm_top5_accuracy top-5 accuracy over masked tokens
    nsp_loss, nsp_accuracy   over sequences
    loss              mlm_loss + nsp_loss (the pretraining objective)

Batches stream through under inference_mode; only running sums are kept, never logits.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable

import torch

from components.core import batches as batching
from components.core import models
from components.core.errors import BertpipeError

# The evaluate step's output folder holds these; the register step reads them.
EVALUATION_METRICS_FILE = "metrics.json"
EVALUATION_REPORT_FILE = "report.md"
METRIC_NAMES = ("mlm_loss", "perplexity", "mlm_accuracy", "mlm_top5_accuracy", "nsp_loss", "nsp_accuracy", "loss")
# The metrics where higher is better: the only ones a promotion rule "must beat the champion by a margin" fits.
HIGHER_IS_BETTER = ("mlm_accuracy", "mlm_top5_accuracy", "nsp_accuracy")


def autocast_for(device: torch.device):
    """bf16 autocast on GPUs; plain fp32 on CPU (bf16 is slower on CPUs without AMX)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def pretraining_metrics(forward: models.MaskedPretrainingModel, batches: Iterable[dict], device: torch.device) -> dict[str, float]:
    """MLM/NSP metrics (METRIC_NAMES) over all batches, from running sums."""
    was_training = forward.training
    forward.eval()
    sums = {"mlm_loss": 0.0, "top1": 0, "top5": 0, "masked": 0, "nsp_loss": 0.0, "nsp_correct": 0, "sequences": 0}
    for batch in batches:
        batch = batching.batch_to(batch, device)
        with autocast_for(device):
            mlm_logits, nsp_logits = forward(*(batch[name] for name in models.MODEL_INPUTS))
        mlm_logits, nsp_logits = mlm_logits.float(), nsp_logits.float()
        labels, nsp_labels = batch["mlm_labels"], batch["next_sentence_label"]
        top5 = mlm_logits.topk(min(5, mlm_logits.shape[-1]), dim=-1).indices
        sums["mlm_loss"] += torch.nn.functional.cross_entropy(mlm_logits, labels, reduction="sum").item()
        sums["top1"] += (top5[:, 0] == labels).sum().item()
        sums["top5"] += (top5 == labels[:, None]).any(dim=-1).sum().item()
        sums["masked"] += labels.numel()
        sums["nsp_loss"] += torch.nn.functional.cross_entropy(nsp_logits, nsp_labels, reduction="sum").item()
        sums["nsp_correct"] += (nsp_logits.argmax(-1) == nsp_labels).sum().item()
        sums["sequences"] += nsp_labels.numel()
    forward.train(was_training)
    if not sums["masked"] or not sums["sequences"]:
        raise BertpipeError("no held-out instances to evaluate on")
    mlm_loss = sums["mlm_loss"] / sums["masked"]
    nsp_loss = sums["nsp_loss"] / sums["sequences"]
    return {
        "mlm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "mlm_accuracy": sums["top1"] / sums["masked"],
        "mlm_top5_accuracy": sums["top5"] / sums["masked"],
        "nsp_loss": nsp_loss,
        "nsp_accuracy": sums["nsp_correct"] / sums["sequences"],
        "loss": mlm_loss + nsp_loss,
    }
