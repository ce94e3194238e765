"""The downstream probe: how well a model's frozen sentence representation serves a labeled classification task.

Masked-LM accuracy is not what teams use a BERT for. The probe embeds each
text once with the frozen encoder ([CLS] or the mean of the last hidden states
over real tokens), fits a multinomial logistic regression on the training
texts (torch, L-BFGS, standardized features, L2), and reports accuracy and
macro-F1 on the test texts next to the majority-class rate. Optionally a short
full fine-tune (encoder + linear head, AdamW) is reported beside it. The
challenger and the registry's champion are probed on the same split, and the
per-text hits are kept so promotion can compare them with a paired bootstrap.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import torch

from components.core import models
from components.core import storage
from components.core.errors import BertpipeError
from components.core.metric_names import PROBE_FILE
from components.core.scoring import autocast_for, evaluation_device
from components.core.settings import as_dict, check
from components.core.model_store import current_champion, model_folder
from components.core.tracking import Tracking, default_tracking_uri, log_metrics, step_run
from components.evaluation.bootstrap import paired_bootstrap
from components.evaluation.probe_data import LabeledSplits, load_labeled
from components.evaluation.settings import ProbeSettings

log = logging.getLogger(__name__)


class Encoder:
    """A model folder's BERT encoder and tokenizer, turning texts into padded, truncated batches."""

    def __init__(self, folder: Path, max_length: int, device: torch.device):
        from transformers import BertTokenizerFast

        self.model = models.load_model(str(folder)).bert.to(device)
        self.tokenizer = BertTokenizerFast.from_pretrained(str(folder))
        self.max_length = min(max_length, self.model.config.max_position_embeddings)
        self.device = device

    def batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return {key: value.to(self.device) for key, value in encoded.items()}

    def truncated(self, texts: list[str]) -> int:
        lengths = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return sum(len(ids) > self.max_length for ids in lengths)

    def pooled(self, batch: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
        with autocast_for(self.device):
            hidden = self.model(**batch, return_dict=True).last_hidden_state.float()
        if pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)

    @torch.inference_mode()
    def embed(self, texts: list[str], pooling: str, batch_size: int) -> torch.Tensor:
        self.model.eval()
        return torch.cat([self.pooled(self.batch(texts[i:i + batch_size]), pooling).float().cpu() for i in range(0, len(texts), batch_size)])


def fit_logistic(features: torch.Tensor, labels: np.ndarray, classes: int, *, l2: float, max_iter: int):
    """A multinomial logistic regression on standardized features (zero-initialised, so deterministic); returns predict(features)."""
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x, y = (features - mean) / std, torch.as_tensor(labels)
    linear = torch.nn.Linear(x.shape[1], classes).double()
    torch.nn.init.zeros_(linear.weight), torch.nn.init.zeros_(linear.bias)
    x = x.double()
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + l2 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda new: linear(((new - mean) / std).double()).argmax(-1).numpy()


def fine_tune(encoder: Encoder, data: LabeledSplits, settings: ProbeSettings) -> np.ndarray:
    """A short full fine-tune of the encoder with a linear head; returns the test predictions."""
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    head = torch.nn.Linear(encoder.model.config.hidden_size, len(data.classes)).to(encoder.device)
    parameters = list(encoder.model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=settings.fine_tune_learning_rate)
    labels = torch.as_tensor(data.train_labels)
    encoder.model.train()
    for _ in range(settings.fine_tune_steps):
        rows = torch.randint(len(data.train_texts), (settings.batch_size,), generator=generator)
        logits = head(encoder.pooled(encoder.batch([data.train_texts[i] for i in rows]), settings.pooling))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[rows].to(encoder.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    features = encoder.embed(data.test_texts, settings.pooling, settings.batch_size)
    with torch.inference_mode():
        return head.cpu()(features).argmax(-1).numpy()


def scores(truth: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (classes absent from both truth and predictions count as F1 0 only if in truth)."""
    f1s = []
    for k in range(classes):
        true_positive = int(((predicted == k) & (truth == k)).sum())
        support, claimed = int((truth == k).sum()), int((predicted == k).sum())
        if support:
            f1s.append(2 * true_positive / (support + claimed))
    return {"accuracy": float((truth == predicted).mean()), "macro_f1": float(np.mean(f1s))}


def probe_model(folder: Path, data: LabeledSplits, settings: ProbeSettings, where: str) -> dict:
    """The probe's results for one model folder: scores, the per-text hits, the truncation count."""
    encoder = Encoder(folder, settings.max_length, evaluation_device())
    truncated = encoder.truncated(data.train_texts + data.test_texts)
    if truncated:
        log.warning("probe of %s: %d of %d texts are longer than %d tokens and were truncated", where, truncated,
                    len(data.train_texts) + len(data.test_texts), encoder.max_length)
    train = encoder.embed(data.train_texts, settings.pooling, settings.batch_size)
    predict = fit_logistic(train, data.train_labels, len(data.classes), l2=settings.l2, max_iter=settings.max_iter)
    predicted = predict(encoder.embed(data.test_texts, settings.pooling, settings.batch_size))
    result = {**scores(data.test_labels, predicted, len(data.classes)), "hits": (predicted == data.test_labels).astype(int).tolist(), "truncated": truncated}
    if settings.fine_tune_steps:
        tuned = fine_tune(encoder, data, settings)
        result["fine_tuned"] = {**scores(data.test_labels, tuned, len(data.classes)), "steps": settings.fine_tune_steps}
    log.info("probe of %s: accuracy %.4f, macro-F1 %.4f", where, result["accuracy"], result["macro_f1"])
    return result


def _probe_champion(registered_model_name: str, data: LabeledSplits, settings: ProbeSettings, tracking_uri: str) -> tuple[str | None, dict | None, str]:
    """(champion version, its results, a note); a champion that cannot be loaded or probed gives no results and says why."""
    version = current_champion(registered_model_name, tracking_uri=tracking_uri)
    if version is None:
        return None, None, f"{registered_model_name} has no champion yet"
    try:
        with model_folder(f"models:/{registered_model_name}/{version}", tracking_uri) as folder:
            return version, probe_model(folder, data, settings, f"champion {version}"), ""
    except BertpipeError as error:
        note = f"champion {version} could not be probed ({error}); deciding without its probe"
        log.warning("%s", note)
        return version, None, note


def probe(model_uri: str, dataset: str, output_uri: str, *, registered_model_name: str = "", settings: ProbeSettings = ProbeSettings(),
          tracking: Tracking | None = None) -> dict:
    """Probe the model (folder, s3:// or models:/ URI) and, given a registered model name, its current champion, on `dataset`.

    Writes probe.json to output_uri and returns it: {"dataset", "classes", "train_size", "test_size", "majority_rate",
    "settings", "challenger", "champion_version", "champion", "notes", "interval" (accuracy, challenger minus champion)}.
    An empty `dataset` probes nothing and says so (the pipeline's probe is optional).
    """
    check(settings, "probe")
    storage.check_output(output_uri)
    if not dataset:
        log.info("no probe dataset given: the downstream probe is skipped")
        result = {"dataset": "", "skipped": True, "challenger": None, "champion": None, "notes": ["no probe dataset given"]}
        storage.write_json(storage.join(output_uri, PROBE_FILE), result)
        return result
    tracking_uri = tracking.tracking_uri if tracking else default_tracking_uri()
    data = load_labeled(dataset, text_column=settings.text_column, label_column=settings.label_column, split_column=settings.split_column,
                        test_fraction=settings.test_fraction, seed=settings.seed)
    majority = float(np.bincount(data.test_labels, minlength=len(data.classes)).max() / len(data.test_labels))
    log.info("probe set %s: %d training and %d test texts, classes %s (majority rate %.3f)", dataset, len(data.train_texts), len(data.test_texts),
             ", ".join(data.classes), majority)
    with step_run(tracking, "probe", {"model_uri": model_uri, "dataset": dataset, **as_dict(settings)}) if tracking else contextlib.nullcontext():
        with model_folder(model_uri, tracking_uri) as folder:
            challenger = probe_model(folder, data, settings, model_uri)
        champion_version, champion, note = (None, None, "") if not registered_model_name else _probe_champion(registered_model_name, data, settings, tracking_uri)
        result = {
            "dataset": dataset, "classes": list(data.classes), "train_size": len(data.train_texts), "test_size": len(data.test_texts),
            "majority_rate": majority, "settings": as_dict(settings), "challenger": challenger, "champion_version": champion_version,
            "champion": champion, "notes": [note] if note else [], "interval": None,
        }
        if champion:
            hits, best = np.array(challenger["hits"]), np.array(champion["hits"])
            result["interval"] = paired_bootstrap(hits, best, np.ones(len(hits)), level=settings.confidence_level, seed=settings.seed).as_dict()
        storage.write_json(storage.join(output_uri, PROBE_FILE), result)
        if tracking:
            log_metrics({f"probe_{key}": challenger[key] for key in ("accuracy", "macro_f1")})
    return result
