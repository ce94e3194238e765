"""Per-instance evaluation results, kept so two models can be compared instance by instance.

For each held-out instance: how many tokens were masked, how many of them the
model got right (top-1, top-5), the summed masked-LM loss, and whether it got
NSP right and its NSP loss. The aggregate metrics are ratios of sums of these
columns, so they come out of the same pass; the paired bootstrap
(components.evaluation.bootstrap) resamples the rows. Stored compactly as one
.npz per sequence length beside metrics.json (a few bytes per instance).
"""

from __future__ import annotations

import io
import math
from typing import Iterable

import numpy as np
import torch

from components.core import batches as batching
from components.core import models
from components.core import storage
from components.core.errors import BertpipeError
from components.evaluation.bootstrap import Interval, paired_bootstrap

COLUMNS = ("masked", "mlm_hits", "mlm_top5_hits", "mlm_loss", "nsp_hit", "nsp_loss")
# metric -> (numerator column, units column or None for one unit per sequence, higher is better)
RATIOS = {
    "mlm_accuracy": ("mlm_hits", "masked", True),
    "mlm_top5_accuracy": ("mlm_top5_hits", "masked", True),
    "mlm_loss": ("mlm_loss", "masked", False),
    "nsp_accuracy": ("nsp_hit", None, True),
    "nsp_loss": ("nsp_loss", None, False),
}


def _autocast(device: torch.device):
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.inference_mode()
def score_instances(forward: models.MaskedPretrainingModel, batches: Iterable[dict], device: torch.device) -> dict[str, np.ndarray]:
    """The COLUMNS for every instance of `batches`, in order."""
    was_training = forward.training
    forward.eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    for batch in batches:
        batch = batching.batch_to(batch, device)
        with _autocast(device):
            mlm_logits, nsp_logits = forward(*(batch[name] for name in models.MODEL_INPUTS))
        mlm_logits, nsp_logits = mlm_logits.float(), nsp_logits.float()
        labels, nsp_labels, row = batch["mlm_labels"], batch["next_sentence_label"], batch["mlm_batch_index"]
        rows = nsp_labels.numel()
        top5 = mlm_logits.topk(min(5, mlm_logits.shape[-1]), dim=-1).indices
        per_row = lambda values: torch.zeros(rows, dtype=torch.float64, device=device).index_add_(0, row, values.double())  # noqa: E731
        columns = {
            "masked": per_row(torch.ones_like(labels)),
            "mlm_hits": per_row(top5[:, 0] == labels),
            "mlm_top5_hits": per_row((top5 == labels[:, None]).any(dim=-1)),
            "mlm_loss": per_row(torch.nn.functional.cross_entropy(mlm_logits, labels, reduction="none")),
            "nsp_hit": (nsp_logits.argmax(-1) == nsp_labels).double(),
            "nsp_loss": torch.nn.functional.cross_entropy(nsp_logits, nsp_labels, reduction="none").double(),
        }
        for name, values in columns.items():
            parts[name].append(values.cpu().numpy())
    forward.train(was_training)
    results = {name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()}
    for name in ("masked", "mlm_hits", "mlm_top5_hits", "nsp_hit"):
        results[name] = results[name].astype(np.int32)
    return results


def metrics_from(results: dict[str, np.ndarray]) -> dict[str, float]:
    """The aggregate metrics (evaluate.METRIC_NAMES) of per-instance results."""
    masked, sequences = int(results["masked"].sum()), len(results["nsp_hit"])
    if not masked or not sequences:
        raise BertpipeError("no held-out instances to evaluate on")
    mlm_loss = float(results["mlm_loss"].sum()) / masked
    nsp_loss = float(results["nsp_loss"].sum()) / sequences
    return {
        "mlm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "mlm_accuracy": int(results["mlm_hits"].sum()) / masked,
        "mlm_top5_accuracy": int(results["mlm_top5_hits"].sum()) / masked,
        "nsp_loss": nsp_loss,
        "nsp_accuracy": int(results["nsp_hit"].sum()) / sequences,
        "loss": mlm_loss + nsp_loss,
    }


def results_file(length: int) -> str:
    return f"instances-{length}.npz"


def save(uri: str, results: dict[str, np.ndarray], test_data: str) -> None:
    """Write the results as .npz; `test_data` names the instances (data manifest hash + split) so a comparison can check them."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, test_data=np.array(test_data), **{name: results[name].astype(np.float32 if "loss" in name else np.int32) for name in COLUMNS})
    storage.write_bytes(uri, buffer.getvalue())


def load(uri: str) -> tuple[dict[str, np.ndarray], str]:
    """(results, test_data) as written by `save`."""
    with np.load(io.BytesIO(storage.read_bytes(uri))) as stored:
        return {name: stored[name] for name in COLUMNS}, str(stored["test_data"])


def compare(challenger: dict[str, np.ndarray], champion: dict[str, np.ndarray], metric: str, *, level: float = 0.95,
            resamples: int = 1000, seed: int = 0) -> Interval:
    """Paired bootstrap interval of challenger - champion on `metric` (an entry of RATIOS), signed so that
    a positive difference always means the challenger is better (losses: champion - challenger)."""
    if metric not in RATIOS:
        raise BertpipeError(f"no per-instance interval for {metric!r}; choose one of {', '.join(RATIOS)}")
    if not np.array_equal(challenger["masked"], champion["masked"]):
        raise BertpipeError("the two models were not scored on the same instances (masked-token counts differ); evaluate both on the same test data")
    numerator, units, higher_better = RATIOS[metric]
    unit_counts = challenger[units] if units else np.ones(len(challenger["nsp_hit"]))
    first, second = (challenger, champion) if higher_better else (champion, challenger)
    return paired_bootstrap(first[numerator], second[numerator], unit_counts, level=level, resamples=resamples, seed=seed)
