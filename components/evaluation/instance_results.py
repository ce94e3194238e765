"""Per-instance evaluation results, kept so two models can be compared instance by instance.

For each held-out instance: how many tokens were masked, how many of them the
model got right (top-1, top-5), how many of them it saw as [MASK] and got right
(top-1), the summed masked-LM loss, and whether it got
NSP right and its NSP loss. The aggregate metrics are ratios of sums of these
columns, so they come out of the same pass; the paired bootstrap
(components.evaluation.bootstrap) resamples the rows. Stored compactly as one
.npz per sequence length beside metrics.json (a few bytes per instance).
"""

from __future__ import annotations

import io

import numpy as np

from components.core import storage
from components.core.scoring import INSTANCE_COLUMNS
from components.core.errors import BertpipeError
from components.evaluation.bootstrap import Interval, paired_bootstrap

# metric -> (numerator column, units column or None for one unit per sequence, higher is better)
RATIOS = {
    "mlm_accuracy": ("mlm_hits", "masked", True),
    "mlm_accuracy_at_mask": ("mask_token_hits", "mask_tokens", True),
    "mlm_top5_accuracy": ("mlm_top5_hits", "masked", True),
    "mlm_loss": ("mlm_loss", "masked", False),
    "nsp_accuracy": ("nsp_hit", None, True),
    "nsp_loss": ("nsp_loss", None, False),
}


def results_file(length: int) -> str:
    return f"instances-{length}.npz"


def save(uri: str, results: dict[str, np.ndarray], test_data: str) -> None:
    """Write the results as .npz; `test_data` names the instances (data manifest hash + split) so a comparison can check them."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, test_data=np.array(test_data), **{name: results[name].astype(np.float32 if "loss" in name else np.int32) for name in INSTANCE_COLUMNS})
    storage.write_bytes(uri, buffer.getvalue())


def load(uri: str) -> tuple[dict[str, np.ndarray], str]:
    """(results, test_data) as written by `save`."""
    with np.load(io.BytesIO(storage.read_bytes(uri))) as stored:
        return {name: stored[name] for name in INSTANCE_COLUMNS}, str(stored["test_data"])


def has_units(results: dict[str, np.ndarray], metric: str) -> bool:
    """Whether `metric` (an entry of RATIOS) counts anything in `results` (mlm_accuracy_at_mask counts nothing without [MASK] positions)."""
    units = RATIOS[metric][1]
    return bool(len(results["nsp_hit"]) if units is None else results[units].sum())


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
