"""The evaluate step: masked-LM and NSP metrics of a model on held-out instances, per sequence length.

Metrics per length L (keys like "mlm_accuracy_128"):
    mlm_loss          mean cross-entropy over masked tokens
    perplexity        exp(mlm_loss)
    mlm_accuracy      top-1 accuracy over masked tokens
    mlm_top5_accuracy top-5 accuracy over masked tokens
    nsp_loss, nsp_accuracy   over sequences
    loss              mlm_loss + nsp_loss (the pretraining objective)
    most_frequent_token_accuracy, majority_nsp_accuracy   what trivial guesses score (core.baselines)

Batches stream through under inference_mode; only running sums are kept, never logits.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Iterable

import torch

from components.core import batches as batching
from components.core import instances as instance_format
from components.core import models
from components.core import storage
from components.core.baselines import BASELINE_OF, trivial_baselines
from components.core.errors import BertpipeError
from components.core.tracking import DEFAULT_TRACKING_URI, Tracking, log_metrics, step_run
from components.core.vocab_files import load_vocab_info

log = logging.getLogger(__name__)

METRIC_NAMES = ("mlm_loss", "perplexity", "mlm_accuracy", "mlm_top5_accuracy", "nsp_loss", "nsp_accuracy", "loss")
FILL_MASK_EXAMPLES = 5
EXAMPLE_TOKENS = 48  # shown per example in report.md


def autocast_for(device: torch.device):
    """bf16 autocast on GPUs; plain fp32 on CPU (bf16 is slower on CPUs without AMX)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def pretraining_metrics(forward: models.MaskedPretrainingModel, batches: Iterable[dict], device: torch.device) -> dict[str, float]:
    """MLM/NSP metrics (METRIC_NAMES) over all batches, from running sums."""
    was_training = forward.training
    forward.eval()
    sums = {"mlm_loss": 0.0, "top1": 0, "top5": 0, "masked": 0, "nsp_loss": 0.0, "nsp_correct": 0, "sequences": 0}
    for batch in batches:
        batch = batching.batch_to(batch, device)
        with autocast_for(device):
            mlm_logits, nsp_logits = forward(*(batch[name] for name in models.MODEL_INPUTS))
        mlm_logits, nsp_logits = mlm_logits.float(), nsp_logits.float()
        labels, nsp_labels = batch["mlm_labels"], batch["next_sentence_label"]
        top5 = mlm_logits.topk(min(5, mlm_logits.shape[-1]), dim=-1).indices
        sums["mlm_loss"] += torch.nn.functional.cross_entropy(mlm_logits, labels, reduction="sum").item()
        sums["top1"] += (top5[:, 0] == labels).sum().item()
        sums["top5"] += (top5 == labels[:, None]).any(dim=-1).sum().item()
        sums["masked"] += labels.numel()
        sums["nsp_loss"] += torch.nn.functional.cross_entropy(nsp_logits, nsp_labels, reduction="sum").item()
        sums["nsp_correct"] += (nsp_logits.argmax(-1) == nsp_labels).sum().item()
        sums["sequences"] += nsp_labels.numel()
    forward.train(was_training)
    if not sums["masked"] or not sums["sequences"]:
        raise BertpipeError("no held-out instances to evaluate on")
    mlm_loss = sums["mlm_loss"] / sums["masked"]
    nsp_loss = sums["nsp_loss"] / sums["sequences"]
    return {
        "mlm_loss": mlm_loss,
        "perplexity": math.exp(min(mlm_loss, 700.0)),
        "mlm_accuracy": sums["top1"] / sums["masked"],
        "mlm_top5_accuracy": sums["top5"] / sums["masked"],
        "nsp_loss": nsp_loss,
        "nsp_accuracy": sums["nsp_correct"] / sums["sequences"],
        "loss": mlm_loss + nsp_loss,
    }


@contextlib.contextmanager
def model_folder(model_uri: str, tracking_uri: str):
    """A local folder holding the model at model_uri: a folder, an s3:// prefix or a registry URI.

    Registry URIs (models:/name/3, models:/name@champion) come back as the
    BertForPreTraining folder the trainer wrote, NSP head included.
    """
    if not model_uri.startswith("models:/"):
        with storage.local_dir(model_uri) as folder:
            yield folder
        return
    from components.registry.register import download_model

    with tempfile.TemporaryDirectory(prefix="bertpipe-model-") as tmp:
        yield Path(download_model(model_uri, tmp, tracking_uri=tracking_uri)["folder"])


def evaluate(
    model_uri: str,
    data_uris: dict[int, str],
    output_uri: str,
    *,
    split: str = "test",
    per_device_eval_batch_size: int = 64,
    max_eval_batches: int | None = None,
    tracking: Tracking | None = None,
) -> dict[str, float]:
    """Evaluate the model on `split` of each data folder (keyed by max_seq_length); write metrics.json and report.md.

    Returns the flat metrics, keys like "mlm_accuracy_128", "perplexity_512".
    """
    if not data_uris:
        raise BertpipeError("evaluate needs at least one data folder (max_seq_length -> data URI)")
    if per_device_eval_batch_size < 1:
        raise BertpipeError("per_device_eval_batch_size must be at least 1")
    data_uris = {int(length): uri for length, uri in data_uris.items()}  # KFP and JSON give string keys
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with model_folder(model_uri, tracking.tracking_uri if tracking else DEFAULT_TRACKING_URI) as folder:
        if not (folder / "vocab_info.json").is_file():
            raise BertpipeError(f"{model_uri} has no vocab_info.json; evaluate a model folder written by train-phase")
        model = models.load_model(str(folder))
        vocab_info = load_vocab_info(str(folder))
        tokens = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    models.check_vocab_size(model, vocab_info["size"], model_uri)
    forward = models.MaskedPretrainingModel(model).to(device)

    params = {"model_uri": model_uri, "split": split, "per_device_eval_batch_size": per_device_eval_batch_size, "max_eval_batches": max_eval_batches}
    params.update({f"data_uri_{length}": uri for length, uri in sorted(data_uris.items())})
    with step_run(tracking, "evaluate", params) if tracking else contextlib.nullcontext():
        results, examples = {}, {}
        for length, data_uri in sorted(data_uris.items()):
            manifest = instance_format.read_manifest(data_uri)
            instance_format.check_compatible(manifest, data_uri, max_seq_length=length, vocab_sha256=vocab_info["sha256"])
            if not manifest["splits"].get(split, {}).get("num_instances"):
                raise BertpipeError(f"{data_uri} has no {split!r} instances to evaluate on; create the data with held-out documents")
            if length > model.config.max_position_embeddings:
                raise BertpipeError(f"{data_uri} has {length}-token sequences; the model takes at most {model.config.max_position_embeddings}")
            log.info("evaluating %s on the %s split of %s", model_uri, split, data_uri)
            batches = batching.evaluation_batches(data_uri, manifest, split, per_device_eval_batch_size, max_eval_batches)
            results[length] = {**pretraining_metrics(forward, batches, device), **trivial_baselines(data_uri, manifest, split)}
            examples[length] = fill_mask_examples(forward, data_uri, manifest, split, tokens, device)
            log.info("length %d: %s", length, ", ".join(f"{k}={v:.4f}" for k, v in results[length].items()))
        flat = {f"{name}_{length}": value for length, metrics in results.items() for name, value in metrics.items()}
        report = render_report(model_uri, split, results, examples)
        storage.write_json(storage.join(output_uri, "metrics.json"), {"model_uri": model_uri, "split": split, "metrics": flat})
        storage.write_text(storage.join(output_uri, "report.md"), report)
        if tracking:
            import mlflow

            log_metrics({f"{split}_{length}_{name}": value for length, metrics in results.items() for name, value in metrics.items()})
            mlflow.log_text(report, "report.md")
    log.info("evaluation written to %s", output_uri)
    return flat


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
        masked = [{"truth": tokens[batch["mlm_labels"][k]], "predicted": [tokens[g] for g in guesses[k]]} for k in picks]
        rows.append({"text": detokenize([tokens[i] for i in ids]), "masked": masked})
    return rows


def detokenize(pieces: list[str]) -> str:
    return " ".join(pieces).replace(" ##", "")


def render_report(model_uri: str, split: str, results: dict[int, dict], examples: dict[int, list]) -> str:
    lines = [f"# Evaluation of {model_uri}", "", f"Held-out split: `{split}`.", ""]
    for length, metrics in results.items():
        lines += [f"## max_seq_length {length}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {metrics[name]:.4f} |" for name in METRIC_NAMES]
        lines += [f"| {name} (trivial) | {metrics[name]:.4f} |" for name in BASELINE_OF.values() if name in metrics]
        lines += ["", f"Fill-mask examples (first {EXAMPLE_TOKENS} tokens; each masked position in order: truth -> top-3 guesses):", ""]
        for example in examples.get(length, []):
            guesses = "; ".join(f"{m['truth']} -> {' / '.join(m['predicted'])}" for m in example["masked"])
            lines += [f"- `{example['text']}`", f"  - {guesses}"]
        lines.append("")
    return "\n".join(lines)
