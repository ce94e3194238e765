"""The loss-curve picture of a training phase (PNG, drawn without a display)."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(history: list[dict], path: Path, title: str) -> Path:
    """Training loss, MLM and NSP loss by step, plus dev loss where validation ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    train = [row for row in history if "loss" in row]
    for key, style in (("loss", "-"), ("mlm_loss", "--"), ("nsp_loss", ":")):
        axis.plot([row["step"] for row in train], [row[key] for row in train], style, label=key)
    dev = [row for row in history if "dev_loss" in row]
    if dev:
        axis.plot([row["step"] for row in dev], [row["dev_loss"] for row in dev], "o-", label="dev_loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
