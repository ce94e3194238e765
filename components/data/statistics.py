"""Per-split statistics of pretraining data: summed from shard counts, rendered for MLflow and the data card."""

from __future__ import annotations

from components.data.instance_creation import InstanceStatistics

_ADDITIVE = ("documents", "instances", "tokens", "short_target", "random_next", "masked", "random", "kept", "long_sentences")


def counts_to_json(stats: InstanceStatistics, long_sentences: int) -> dict:
    """A shard's raw counts in a JSON-safe form (histogram keys become strings)."""
    return {
        **{key: getattr(stats, key) for key in _ADDITIVE if key != "long_sentences"},
        "long_sentences": long_sentences,
        "length_counts": {str(k): v for k, v in sorted(stats.length_counts.items())},
        "predictions_counts": {str(k): v for k, v in sorted(stats.predictions_counts.items())},
    }


def add_counts(total: dict, shard: dict) -> dict:
    """Sum two count dicts (as written by counts_to_json)."""
    out = {key: total.get(key, 0) + shard.get(key, 0) for key in _ADDITIVE}
    for histogram in ("length_counts", "predictions_counts"):
        merged = dict(total.get(histogram, {}))
        for key, value in shard.get(histogram, {}).items():
            merged[key] = merged.get(key, 0) + value
        out[histogram] = dict(sorted(merged.items(), key=lambda item: int(item[0])))
    return out


def _percentile(histogram: dict[str, int], fraction: float) -> int:
    total = sum(histogram.values())
    seen = 0
    for key, count in sorted(histogram.items(), key=lambda item: int(item[0])):
        seen += count
        if seen >= fraction * total:
            return int(key)
    return 0


def summarize(counts: dict) -> dict:
    """The statistics the manifest, MLflow and the data card show for one split."""
    instances = counts.get("instances", 0)
    predictions = counts.get("masked", 0) + counts.get("random", 0) + counts.get("kept", 0)
    lengths = counts.get("length_counts", {})

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    return {
        "documents": counts.get("documents", 0),
        "instances": instances,
        "tokens": counts.get("tokens", 0),
        "mean_length": ratio(counts.get("tokens", 0), instances),
        "length_p10": _percentile(lengths, 0.10) if instances else 0,
        "length_p50": _percentile(lengths, 0.50) if instances else 0,
        "length_p90": _percentile(lengths, 0.90) if instances else 0,
        "length_max": max((int(k) for k in lengths), default=0),
        "short_target_fraction": ratio(counts.get("short_target", 0), instances),
        "random_next_fraction": ratio(counts.get("random_next", 0), instances),
        "masked_per_instance": ratio(predictions, instances),
        "mask_token_fraction": ratio(counts.get("masked", 0), predictions),
        "random_token_fraction": ratio(counts.get("random", 0), predictions),
        "kept_token_fraction": ratio(counts.get("kept", 0), predictions),
        "long_sentences": counts.get("long_sentences", 0),
        "length_counts": lengths,
        "predictions_counts": counts.get("predictions_counts", {}),
    }


def metrics_for_mlflow(statistics: dict[str, dict]) -> dict[str, float]:
    """Flat `split/name` metrics (histograms left out; they are in the manifest and data card)."""
    return {
        f"{split}/{name}": float(value)
        for split, summary in statistics.items()
        for name, value in summary.items()
        if not isinstance(value, dict)
    }


_CORPUS_ROWS = (
    ("files", "Files (or datasets) read"),
    ("records", "Documents read"),
    ("bad_records", "Bad records skipped"),
    ("bad_files", "Bad files skipped"),
    ("empty", "Dropped: empty"),
    ("short", "Dropped: shorter than min_document_chars"),
    ("duplicates", "Dropped: exact duplicates"),
    ("documents", "Documents kept"),
    ("sentences", "Sentences"),
)


def corpus_metrics(counts: dict) -> dict[str, float]:
    """`corpus/name` metrics from the corpus counts (components.core.corpus.CorpusCounts.summary)."""
    return {f"corpus/{name}": float(value) for name, value in counts.items()}


def _corpus_section(reading: dict) -> list[str]:
    counts = reading["counts"]
    lines = ["## Corpus", "", f"Format: {reading['format']}.", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {counts[key]:,} |" for key, label in _CORPUS_ROWS]
    lines += [f"| Mean sentences per document | {counts['mean_sentences_per_document']:.1f} |", ""]
    lines += [f"- {key}: {value}" for key, value in reading["settings"].items()]
    return lines + [""]


_ROWS = (
    ("documents", "Documents", "{:,}"),
    ("instances", "Instances", "{:,}"),
    ("tokens", "Tokens (in instances)", "{:,}"),
    ("mean_length", "Mean length", "{:.1f}"),
    ("length_p10", "Length p10", "{}"),
    ("length_p50", "Length median", "{}"),
    ("length_p90", "Length p90", "{}"),
    ("length_max", "Length max", "{}"),
    ("short_target_fraction", "Short-target fraction", "{:.3f}"),
    ("random_next_fraction", "NSP random-next fraction", "{:.3f}"),
    ("masked_per_instance", "Masked positions per instance", "{:.2f}"),
    ("mask_token_fraction", "[MASK] fraction", "{:.3f}"),
    ("random_token_fraction", "Random-token fraction", "{:.3f}"),
    ("kept_token_fraction", "Kept fraction", "{:.3f}"),
    ("long_sentences", "Sentences longer than max_seq_length - 3", "{:,}"),
)


def data_card(manifest: dict) -> str:
    """The Markdown data card written next to the shards."""
    statistics = manifest["statistics"]
    splits = list(statistics)
    settings = manifest["settings"]
    lines = [
        "# Pretraining data",
        "",
        f"Made by bertpipe create-pretraining-data from `{manifest['corpus']}` with vocab sha256 "
        f"`{manifest['vocab_sha256'][:16]}` ({manifest['vocab_size']:,} tokens, lowercase={manifest['lowercase']}).",
        "",
        "## Settings",
        "",
        *(f"- {key}: {value}" for key, value in settings.items()),
        "",
        *(_corpus_section(manifest["corpus_reading"]) if "corpus_reading" in manifest else []),
        "## Statistics",
        "",
        "| | " + " | ".join(splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for key, label, fmt in _ROWS:
        lines.append(f"| {label} | " + " | ".join(fmt.format(statistics[s][key]) for s in splits) + " |")
    lines += ["", "## Length distribution (train)", "", "| length | instances |", "|---|---|"]
    lines += [f"| {length} | {count:,} |" for length, count in _bucketed(statistics["train"]["length_counts"])]
    return "\n".join(lines) + "\n"


def _bucketed(histogram: dict[str, int], buckets: int = 16) -> list[tuple[str, int]]:
    """The length histogram in a few equal-width buckets (readable in a table)."""
    if not histogram:
        return []
    top = max(int(k) for k in histogram)
    width = max(1, -(-top // buckets))
    counts: dict[int, int] = {}
    for key, value in histogram.items():
        counts[int(key) // width] = counts.get(int(key) // width, 0) + value
    return [(f"{b * width}-{b * width + width - 1}", counts[b]) for b in sorted(counts)]
