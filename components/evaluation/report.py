"""report.md of the evaluate step: the metric tables, the champion beside them, and fill-mask examples to read."""

from __future__ import annotations

import torch

from components.core import batches as batching
from components.core import models
from components.core.baselines import BASELINE_OF
from components.core.metric_names import METRIC_NAMES
from components.core.scoring import autocast_for
from components.core.vocab_files import MASK_TOKEN

FILL_MASK_EXAMPLES = 5
EXAMPLE_TOKENS = 48  # shown per example


@torch.inference_mode()
def fill_mask_examples(forward, data_uri: str, manifest: dict, split: str, tokens: list[str], device) -> list[dict]:
    """The first few held-out instances with their masked tokens, the truth and the model's top guesses."""
    batch = next(batching.evaluation_batches(data_uri, manifest, split, FILL_MASK_EXAMPLES, max_batches=1), None)
    if batch is None:
        return []
    forward.eval()
    batch = batching.batch_to(batch, device)
    with autocast_for(device):
        mlm_logits, _ = forward(*(batch[name] for name in models.MODEL_INPUTS))
    guesses = mlm_logits.float().topk(3, dim=-1).indices.tolist()
    rows = []
    for row in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()[:EXAMPLE_TOKENS]
        picks = [k for k in (batch["mlm_batch_index"] == row).nonzero().flatten().tolist() if batch["mlm_positions"][k] < EXAMPLE_TOKENS]
        masked = [{"truth": tokens[batch["mlm_labels"][k]], "shown": tokens[batch["input_ids"][row, batch["mlm_positions"][k]]],
                   "predicted": [tokens[g] for g in guesses[k]]} for k in picks]
        rows.append({"text": detokenize([tokens[i] for i in ids]), "masked": masked})
    return rows


def _shown_note(masked: dict) -> str:
    """What the model saw at a masked position when it was not [MASK]: there it can copy instead of guessing from context."""
    shown = masked["shown"]
    return "" if shown == MASK_TOKEN else " (kept)" if shown == masked["truth"] else f" (shown as {shown})"


def detokenize(pieces: list[str]) -> str:
    """WordPiece back to words. A continuation right after a special token ([CLS]/[SEP]: a segment that Google's
    truncate_seq_pair cut mid-word) keeps its "##" instead of gluing onto it ("[CLS]trimony")."""
    words: list[str] = []
    for piece in pieces:
        if piece.startswith("##") and words and not (words[-1].startswith("[") and words[-1].endswith("]")):
            words[-1] += piece[2:]
        else:
            words.append(piece)
    return " ".join(words)


def champion_section(challenger: dict[str, float], champion: dict | None) -> list[str]:
    """The new model beside the champion on the same instances, or a line saying why there is no such table."""
    if champion is None:
        return []
    if champion["metrics"] is None:
        return ["## Champion", "", champion["note"], ""]
    lines = [f"## New model vs champion (version {champion['version']}), same test data", "", "| metric | new | champion |", "|---|---|---|"]
    lines += [f"| {name} | {challenger[name]:.4f} | {champion['metrics'][name]:.4f} |" for name in sorted(challenger) if name in champion["metrics"]]
    return lines + [""]


def render_report(model_uri: str, split: str, results: dict[int, dict], examples: dict[int, list], flat: dict[str, float], champion: dict | None) -> str:
    lines = [f"# Evaluation of {model_uri}", "", f"Held-out split: `{split}`.", ""]
    lines += champion_section(flat, champion)
    for length, metrics in results.items():
        lines += [f"## max_seq_length {length}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {metrics[name]:.4f} |" for name in METRIC_NAMES]
        lines += [f"| {name} (trivial) | {metrics[name]:.4f} |" for name in BASELINE_OF.values() if name in metrics]
        lines += ["", f"Fill-mask examples (first {EXAMPLE_TOKENS} tokens; each masked position in order: truth -> top-3 guesses; "
                      "\"kept\" and \"shown as X\" mark the positions BERT's 80/10/10 rule left visible or replaced, where the model sees no [MASK]):", ""]
        for example in examples.get(length, []):
            guesses = "; ".join(f"{m['truth']}{_shown_note(m)} -> {' / '.join(m['predicted'])}" for m in example["masked"])
            lines += [f"- `{example['text']}`", f"  - {guesses}"]
        lines.append("")
    return "\n".join(lines)
