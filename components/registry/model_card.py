"""The model card of a registered version: data, training, metrics with intervals, probe, decision, lineage.

It becomes the version's MLflow description (capped at what MLflow's SQL stores
hold, 5,000 characters, with a pointer to the full file) and a file,
model_card.md, in the register run's artifacts and beside the model folder.
"""

from __future__ import annotations

from components.core.metric_names import METRIC_NAMES

MODEL_CARD_FILE = "model_card.md"
MAX_DESCRIPTION = 5000


def interval_lines(intervals: dict, against: str = "champion") -> list[str]:
    """New model minus `against` (the champion, or the trivial baseline) per metric, with the paired bootstrap interval."""
    if not intervals:
        return []
    first = next(iter(intervals.values()))
    lines = [f"New model minus {against} on the same instances, paired bootstrap over instances ({first['resamples']} resamples, seed {first['seed']}):", "",
             "| metric | difference | interval | level | instances | units |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {i['difference']:+.4f} | [{i['low']:+.4f}, {i['high']:+.4f}] | {i['level']:.0%} | {i['instances']} | {i['units']} |"
              for name, i in sorted(intervals.items())]
    return lines + [""]


def evaluation_interval_lines(evaluation: dict) -> list[str]:
    """The evaluation's intervals against the champion, then against the trivial baselines (older metrics.json have neither)."""
    return interval_lines(evaluation.get("intervals") or {}) + interval_lines(evaluation.get("baseline_intervals") or {}, "trivial baseline")


def probe_lines(probe: dict | None) -> list[str]:
    if not probe or not probe.get("challenger"):
        return ["Downstream probe: not run." + (f" ({'; '.join(probe['notes'])})" if probe and probe.get("notes") else ""), ""]
    lines = [f"Downstream probe on `{probe['dataset']}` ({probe['train_size']} training / {probe['test_size']} test texts, classes "
             f"{', '.join(probe['classes'])}; majority-class rate {probe['majority_rate']:.4f}), logistic regression on the frozen "
             f"{probe['settings']['pooling']}-pooled representation:", "", "| model | accuracy | macro-F1 |", "|---|---|---|"]
    lines.append(f"| new | {probe['challenger']['accuracy']:.4f} | {probe['challenger']['macro_f1']:.4f} |")
    if probe.get("champion"):
        lines.append(f"| champion {probe['champion_version']} | {probe['champion']['accuracy']:.4f} | {probe['champion']['macro_f1']:.4f} |")
    interval = probe.get("interval")
    if interval:
        lines += ["", f"Accuracy difference {interval['difference']:+.4f}, {interval['level']:.0%} interval [{interval['low']:+.4f}, {interval['high']:+.4f}]."]
    notes = [f"Note: {note}" for note in probe.get("notes", [])]
    return lines + ([""] + notes if notes else []) + [""]


def render_model_card(registered: dict, evaluation: dict, probe: dict | None, phases: list[dict], pipeline_run: str) -> str:
    """Markdown for one registered version; `registered` is the register step's result (with "promotion")."""
    promotion = registered["promotion"]
    lines = [f"# {registered['name']} version {registered['version']}", "",
             "BERT pretrained with masked LM and next-sentence prediction by bertpipe.", "", "## Data", ""]
    lines += [f"- max_seq_length {length}: `{data['uri']}` (manifest sha256 {data['manifest_sha256'][:16]}…), evaluated on its `{evaluation['split']}` split"
              for length, data in sorted(evaluation["data"].items(), key=lambda item: int(item[0]))]
    lines += ["", "## Training", ""]
    lines += [f"- phase {n}: {phase['steps']} steps at max_seq_length {phase['max_seq_length']} (`{phase['output_uri']}`)" for n, phase in enumerate(phases, 1)]
    lines += ["" if phases else "- not recorded (the model folder has no training summaries)", "## Metrics", "",
              "| length | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    lengths = sorted({int(key.rsplit("_", 1)[1]) for key in evaluation["metrics"]})
    lines += [f"| {length} | " + " | ".join(f"{evaluation['metrics'].get(f'{name}_{length}', float('nan')):.4f}" for name in METRIC_NAMES) + " |"
              for length in lengths]
    lines += [""] + evaluation_interval_lines(evaluation) + ["## Downstream probe", ""] + probe_lines(probe)
    lines += ["## Promotion", "", f"Decision: **{promotion['decision']}**" + (" (dry run)" if promotion.get("dry_run") else ""), ""]
    lines += [f"- {reason}" for reason in promotion["reasons"]]
    lines += ["", "## Lineage", "", f"- source model: `{evaluation['model_uri']}`", f"- pipeline run: {pipeline_run or 'none (run by hand)'}",
              f"- champion before: {promotion.get('champion_before') or 'none'}; after: {promotion.get('champion_after') or 'none'}",
              f"- MLflow run of the registration: {registered.get('run_id', '?')}", ""]
    return "\n".join(lines)


def description(card: str) -> str:
    """The card as an MLflow description: whole when it fits, else cut with a pointer to the file."""
    if len(card) <= MAX_DESCRIPTION:
        return card
    tail = f"\n\n… (cut; the whole card is {MODEL_CARD_FILE} in the registration run's artifacts)"
    return card[: MAX_DESCRIPTION - len(tail)] + tail
