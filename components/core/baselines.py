"""The scores of trivial models on a held-out split: what a trained model has to beat to have learned anything.

- most_frequent_token_accuracy: always guessing the split's most frequent masked
  token (the best any constant guess can score there, so it is a strict bar);
- most_frequent_token_accuracy_at_mask: the same over the masked positions the model
  sees as [MASK] only. BERT's 80/10/10 rule leaves ~10% of the masked tokens
  unchanged in the input, and copying them beats the first bar without learning
  anything from context: a copier that says the most frequent token elsewhere scores
  ~0.1 + 0.8 x the first bar. At [MASK] nothing can be copied;
- majority_nsp_accuracy: always guessing the split's more frequent NSP label.

A tiny model trained briefly sits at the most frequent token at [MASK] (the
"frequent-token plateau": it predicts "the", "," or "." everywhere) before it learns
anything else. Evaluation reports them beside each metric (keys like
"most_frequent_token_accuracy_512"); promotion requires a model to beat them.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from components.core.instances import load_split

BASELINE_OF = {
    "mlm_accuracy": "most_frequent_token_accuracy",
    "mlm_accuracy_at_mask": "most_frequent_token_accuracy_at_mask",
    "nsp_accuracy": "majority_nsp_accuracy",
}


def baseline_key(metric: str) -> str | None:
    """"mlm_accuracy_512" -> "most_frequent_token_accuracy_512"; None for metrics without a trivial baseline."""
    name, _, length = metric.rpartition("_")
    return f"{BASELINE_OF[name]}_{length}" if name in BASELINE_OF else None


def floor_metrics(metric: str) -> tuple[str, ...]:
    """The metrics that must beat their trivial baselines when `metric` decides a promotion: MLM accuracy
    brings its [MASK]-only twin ("mlm_accuracy_512" -> also "mlm_accuracy_at_mask_512"), which copying cannot pass."""
    name, _, length = metric.rpartition("_")
    return (metric, f"mlm_accuracy_at_mask_{length}") if name == "mlm_accuracy" else (metric,)


def _most_frequent_rate(tokens: np.ndarray) -> float:
    return float(np.bincount(tokens).max() / len(tokens)) if len(tokens) else float("nan")


def trivial_baselines(data_uri: str, manifest: dict, split: str, mask_id: int) -> dict[str, float]:
    """The BASELINE_OF values on `split` of a data folder (`mask_id`: the vocab's [MASK])."""
    table = load_split(data_uri, split, manifest)
    labels = np.asarray(pc.list_flatten(table["masked_lm_ids"]), dtype=np.int64)
    # Where each masked position sits in the flat input_ids: its row's start plus its position.
    row_starts = np.cumsum(np.concatenate([[0], np.asarray(pc.list_value_length(table["input_ids"]), dtype=np.int64)[:-1]]))
    positions = np.asarray(pc.list_flatten(table["masked_lm_positions"]), dtype=np.int64)
    per_row = np.asarray(pc.list_value_length(table["masked_lm_positions"]), dtype=np.int64)
    shown = np.asarray(pc.list_flatten(table["input_ids"]), dtype=np.int64)[np.repeat(row_starts, per_row) + positions]
    positives = pc.sum(table["next_sentence_label"]).as_py() or 0
    return {
        "most_frequent_token_accuracy": _most_frequent_rate(labels),
        "most_frequent_token_accuracy_at_mask": _most_frequent_rate(labels[shown == mask_id]),
        "majority_nsp_accuracy": max(positives, table.num_rows - positives) / table.num_rows,
    }
