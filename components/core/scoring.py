"""MLM/NSP metrics of a model over batches of instances: shared by training's dev validation and the evaluate step.

Metrics (keys of `pretraining_metrics`):
    mlm_loss          mean cross-entropy over masked tokens
    perplexity        exp(mlm_loss)
    mlm_accuracy      top-1 accuracy over masked tokens
    mlm_accuracy_at_mask  top-1 accuracy over the masked tokens the model saw as [MASK] (80% of them): the ~10%
                      left unchanged can be copied from the input, so only this one measures guessing from context
    mlm_top5_accuracy top-5 accuracy over masked tokens
    nsp_loss, nsp_accuracy   over sequences
    loss              mlm_loss + nsp_loss (the pretraining objective)

Batches stream through under inference_mode; per instance only a few sums are kept
(masked tokens, top-1/top-5 hits, summed losses), never logits: the metrics are ratios of
their totals, and the evaluate step keeps the per-instance columns so two models can be
compared instance by instance (components.evaluation.bootstrap).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from typing import Iterable

import torch

from components.core import batches as batching
from components.core import models
from components.core.errors import BertpipeError

INSTANCE_COLUMNS = ("masked", "mlm_hits", "mlm_top5_hits", "mlm_loss", "mask_tokens", "mask_token_hits", "nsp_hit", "nsp_loss")


def evaluation_device() -> torch.device:
    """The GPU when the pod has one (the pipeline gives evaluate and probe one), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_for(device: torch.device):
    """bf16 autocast on GPUs; plain fp32 on CPU (bf16 is slower on CPUs without AMX)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def score_instances(forward: models.MaskedPretrainingModel, batches: Iterable[dict], device: torch.device, mask_id: int) -> dict[str, np.ndarray]:
    """The INSTANCE_COLUMNS for every instance of `batches`, in order (`mask_id`: the vocab's [MASK])."""
    was_training = forward.training
    forward.eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in INSTANCE_COLUMNS}
    for batch in batches:
        batch = batching.batch_to(batch, device)
        with autocast_for(device):
            mlm_logits, nsp_logits = forward(*(batch[name] for name in models.MODEL_INPUTS))
        mlm_logits, nsp_logits = mlm_logits.float(), nsp_logits.float()
        labels, nsp_labels, row = batch["mlm_labels"], batch["next_sentence_label"], batch["mlm_batch_index"]
        rows = nsp_labels.numel()
        top5 = mlm_logits.topk(min(5, mlm_logits.shape[-1]), dim=-1).indices
        hits = top5[:, 0] == labels
        at_mask = batch["input_ids"][row, batch["mlm_positions"]] == mask_id
        per_row = lambda values: torch.zeros(rows, dtype=torch.float64, device=device).index_add_(0, row, values.double())  # noqa: E731
        columns = {
            "masked": per_row(torch.ones_like(labels)),
            "mlm_hits": per_row(hits),
            "mlm_top5_hits": per_row((top5 == labels[:, None]).any(dim=-1)),
            "mlm_loss": per_row(torch.nn.functional.cross_entropy(mlm_logits, labels, reduction="none")),
            "mask_tokens": per_row(at_mask),
            "mask_token_hits": per_row(hits & at_mask),
            "nsp_hit": (nsp_logits.argmax(-1) == nsp_labels).double(),
            "nsp_loss": torch.nn.functional.cross_entropy(nsp_logits, nsp_labels, reduction="none").double(),
        }
        for name, values in columns.items():
            parts[name].append(values.cpu().numpy())
    forward.train(was_training)
    results = {name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()}
    for name in ("masked", "mlm_hits", "mlm_top5_hits", "mask_tokens", "mask_token_hits", "nsp_hit"):
        results[name] = results[name].astype(np.int32)
    return results


def metrics_from(results: dict[str, np.ndarray]) -> dict[str, float]:
    """The aggregate metrics (components.core.metric_names.METRIC_NAMES) of per-instance results."""
    masked, sequences = int(results["masked"].sum()), len(results["nsp_hit"])
    if not masked or not sequences:
        raise BertpipeError("no held-out instances to evaluate on")
    mlm_loss = float(results["mlm_loss"].sum()) / masked
    nsp_loss = float(results["nsp_loss"].sum()) / sequences
    mask_tokens = int(results["mask_tokens"].sum())
    return {
        "mlm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "mlm_accuracy": int(results["mlm_hits"].sum()) / masked,
        "mlm_top5_accuracy": int(results["mlm_top5_hits"].sum()) / masked,
        "mlm_accuracy_at_mask": int(results["mask_token_hits"].sum()) / mask_tokens if mask_tokens else math.nan,
        "nsp_loss": nsp_loss,
        "nsp_accuracy": int(results["nsp_hit"].sum()) / sequences,
        "loss": mlm_loss + nsp_loss,
    }


def pretraining_metrics(forward: models.MaskedPretrainingModel, batches: Iterable[dict], device: torch.device, mask_id: int) -> dict[str, float]:
    """MLM/NSP metrics (metric_names.METRIC_NAMES) over all batches."""
    return metrics_from(score_instances(forward, batches, device, mask_id))
