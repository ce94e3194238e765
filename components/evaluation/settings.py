"""The evaluate and probe steps' settings, apart from the steps, so the CLI builds its flags without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from components.core.settings import setting


@dataclass(frozen=True)
class EvaluationSettings:
    """How the held-out instances are read (the model and the data folders are inputs)."""

    split: str = setting("test", "held-out split to evaluate on", choices=("dev", "test"))
    per_device_eval_batch_size: int = setting(64, "sequences per evaluation batch", minimum=1)
    max_eval_batches: int = setting(0, "cap on evaluation batches per length, for quick checks (0: the whole split)", minimum=0)
    confidence_level: float = setting(0.95, "level of the paired bootstrap intervals of new model minus champion and minus each trivial baseline", above=0.0, below=1.0)
    bootstrap_resamples: int = setting(1000, "resamples of the paired bootstrap (of instances, not tokens)", minimum=100)
    bootstrap_seed: int = setting(0, "seed of the paired bootstrap")


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe reads its dataset and trains its classifier."""

    text_column: str = setting("text", "column of the probe dataset holding the text")
    label_column: str = setting("label", "column of the probe dataset holding the class label")
    split_column: str = setting("split", "column with 'train'/'test' per row; without it the rows are split by test_fraction")
    test_fraction: float = setting(0.2, "fraction of rows held out for testing when the dataset has no split column", above=0.0, below=1.0)
    pooling: str = setting("mean", "sentence representation: the mean of the last hidden states, or the [CLS] vector", choices=("mean", "cls"))
    max_length: int = setting(128, "tokens per text (longer texts are truncated, and the log says how many)", minimum=8)
    l2: float = setting(1e-3, "L2 penalty of the logistic regression", minimum=0.0)
    max_iter: int = setting(200, "L-BFGS iterations of the logistic regression", minimum=1)
    fine_tune_steps: int = setting(0, "steps of an optional full fine-tune (encoder + linear head) reported beside the frozen probe; 0: none", minimum=0)
    fine_tune_learning_rate: float = setting(3e-5, "AdamW learning rate of the fine-tune", above=0.0)
    batch_size: int = setting(32, "texts per batch when embedding and fine-tuning", minimum=1)
    seed: int = setting(0, "seed of the split by fraction, the fine-tune and the bootstrap")
    confidence_level: float = setting(0.95, "level of the paired bootstrap interval of the accuracy difference to the champion", above=0.0, below=1.0)
