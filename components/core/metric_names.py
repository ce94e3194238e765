"""Metric names and the files that carry them between steps: torch-free, so the registry, the
promotion rule and the CLI's settings can name them without loading a model library."""

# The evaluate step's output folder holds these; the register step reads them.
EVALUATION_METRICS_FILE = "metrics.json"
EVALUATION_REPORT_FILE = "report.md"
PROBE_FILE = "probe.json"  # the probe step's output, read by the register step too
METRIC_NAMES = ("mlm_loss", "perplexity", "mlm_accuracy", "mlm_accuracy_at_mask", "mlm_top5_accuracy", "nsp_loss", "nsp_accuracy", "loss")
# The metrics where higher is better: the only ones a promotion rule "must beat the champion by a margin" fits.
HIGHER_IS_BETTER = ("mlm_accuracy", "mlm_accuracy_at_mask", "mlm_top5_accuracy", "nsp_accuracy")
