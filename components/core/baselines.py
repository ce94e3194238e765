"""The scores of trivial models on a held-out split: what a trained model has to beat to have learned anything.

- most_frequent_token_accuracy: always guessing the split's most frequent masked
  token (the best any constant guess can score there, so it is a strict bar);
- majority_nsp_accuracy: always guessing the split's more frequent NSP label.

A tiny model trained briefly sits at the first one (the "frequent-token plateau":
it predicts "the", "," or "." everywhere) before it learns anything else.
Evaluation reports them beside each metric (keys like "most_frequent_token_accuracy_512");
promotion requires a model to beat them.
"""

from __future__ import annotations

import pyarrow.compute as pc

from components.core.instances import load_split

BASELINE_OF = {"mlm_accuracy": "most_frequent_token_accuracy", "nsp_accuracy": "majority_nsp_accuracy"}


def baseline_key(metric: str) -> str | None:
    """"mlm_accuracy_512" -> "most_frequent_token_accuracy_512"; None for metrics without a trivial baseline."""
    name, _, length = metric.rpartition("_")
    return f"{BASELINE_OF[name]}_{length}" if name in BASELINE_OF else None


def trivial_baselines(data_uri: str, manifest: dict, split: str) -> dict[str, float]:
    """{"most_frequent_token_accuracy", "majority_nsp_accuracy"} on `split` of a data folder."""
    table = load_split(data_uri, split, manifest)
    counts = pc.value_counts(pc.list_flatten(table["masked_lm_ids"]))
    tallies = counts.field("counts").to_pylist()
    positives = pc.sum(table["next_sentence_label"]).as_py() or 0
    return {
        "most_frequent_token_accuracy": max(tallies) / sum(tallies),
        "majority_nsp_accuracy": max(positives, table.num_rows - positives) / table.num_rows,
    }
