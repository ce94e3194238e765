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
"most_frequent_token_accuracy_512") with a paired bootstrap interval of model minus
trivial guess per instance; promotion requires a model to beat them clearly.
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


def _most_frequent(tokens: np.ndarray) -> int:
    return int(np.bincount(tokens).argmax()) if len(tokens) else -1


def trivial_guesses(data_uri: str, manifest: dict, split: str, mask_id: int, rows: int | None = None) -> dict[str, np.ndarray]:
    """Per instance of `split` (stored order, the first `rows` when given: the rows evaluation scored), what the trivial
    guesses score, in scoring.INSTANCE_COLUMNS' names so the paired bootstrap can pair them with a model's rows:
    masked, mlm_hits (the most frequent masked token), mask_tokens, mask_token_hits (the most frequent token among
    those shown as [MASK]) and nsp_hit (the majority class). The guesses are fitted on those same rows."""
    table = load_split(data_uri, split, manifest)
    table = table.slice(0, rows) if rows is not None else table
    ids, positions = table["input_ids"].combine_chunks(), table["masked_lm_positions"].combine_chunks()
    per_row = np.asarray(pc.list_value_length(positions), dtype=np.int64)
    row_of = np.repeat(np.arange(table.num_rows), per_row)
    labels = np.asarray(pc.list_flatten(table["masked_lm_ids"]), dtype=np.int64)
    # Where each masked position sits in the list column's values: its row's offset plus its position.
    flat = np.asarray(ids.offsets, dtype=np.int64)[:-1][row_of] + np.asarray(pc.list_flatten(positions), dtype=np.int64)
    at_mask = np.asarray(ids.values, dtype=np.int64)[flat] == mask_id
    nsp = np.asarray(table["next_sentence_label"], dtype=np.int64)

    def count(hits: np.ndarray) -> np.ndarray:
        return np.bincount(row_of, weights=hits, minlength=table.num_rows).astype(np.int32)

    return {
        "masked": per_row.astype(np.int32),
        "mlm_hits": count(labels == _most_frequent(labels)),
        "mask_tokens": count(at_mask),
        "mask_token_hits": count(at_mask & (labels == _most_frequent(labels[at_mask]))),
        "nsp_hit": (nsp == int(2 * nsp.sum() > len(nsp))).astype(np.int32),
    }


def baseline_rates(guesses: dict[str, np.ndarray]) -> dict[str, float]:
    """The BASELINE_OF values: the rates of `trivial_guesses`' columns (NaN where nothing was counted)."""
    def rate(hits: str, units: int) -> float:
        return float(guesses[hits].sum() / units) if units else float("nan")

    return {
        "most_frequent_token_accuracy": rate("mlm_hits", guesses["masked"].sum()),
        "most_frequent_token_accuracy_at_mask": rate("mask_token_hits", guesses["mask_tokens"].sum()),
        "majority_nsp_accuracy": rate("nsp_hit", len(guesses["nsp_hit"])),
    }
