"""BertForPreTraining: size presets, building and loading, and the masked-positions-only forward.

Presets follow Google's BERT release (Turc et al. 2019 for the small ones):

    preset  layers  hidden  heads  intermediate  parameters (30,522 vocab)
    tiny       2     128      2        512          4.4 M
    mini       4     256      4       1024         11.3 M
    small      4     512      8       2048         29.1 M
    base      12     768     12       3072        110 M
    large     24    1024     16       4096        335 M

Every preset has max_position_embeddings=512, so a phase-128 model can continue at 512.
build_model makes components.core.bert's twin (what the trainer trains); load_model reads
a model folder with transformers' own class (what evaluation and registration use).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from components.core import bert, demo_checkpoint, storage
from components.core.errors import BertpipeError
from components.core.grouped_attention import InstanceGroups

log = logging.getLogger(__name__)

MAX_POSITION_EMBEDDINGS = 512
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "small": {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16, "intermediate_size": 4096},
}
# The config fields that make two checkpoints interchangeable.
SHAPE_KEYS = ("vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings", "type_vocab_size")


def build_model(model_size: str, vocab_size: int) -> bert.BertForPreTraining:
    """A freshly initialised BertForPreTraining of a preset size (seed torch before calling for reproducible weights):
    components.core.bert's twin of transformers' class, which trains without importing transformers."""
    if model_size not in PRESETS:
        raise BertpipeError(f"unknown model_size {model_size!r}; choose one of {', '.join(PRESETS)}")
    config = bert.BertConfig(vocab_size=vocab_size, max_position_embeddings=MAX_POSITION_EMBEDDINGS, type_vocab_size=2, pad_token_id=0, **PRESETS[model_size])
    return bert.BertForPreTraining(config)


def model_shape(model) -> dict[str, int]:
    return {key: int(getattr(model.config, key)) for key in SHAPE_KEYS}


def load_model(source: str):
    """transformers' BertForPreTraining from a local folder, an s3:// folder, a hub id or "demo" (core.demo_checkpoint).

    A BERT encoder checkpoint without pretraining heads (e.g. a sentence-embedding
    model) loads too: the MLM/NSP heads are initialised and the log says so.
    """
    source = demo_checkpoint.resolve(source)
    if storage.is_s3(source):
        with storage.local_dir(source) as folder:
            return _from_pretrained(str(folder), source)
    if looks_like_path(source) and not Path(source).exists():
        raise BertpipeError(f"model folder {source} does not exist (a hub id looks like org/name; a path was meant?)")
    return _from_pretrained(source, source)


def looks_like_path(source: str) -> bool:
    """A local path rather than a hub id (org/name): absolute, relative with ./ or ../, ~, or a Windows-style path."""
    return source.startswith(("/", "./", "../", "~", ".\\")) or source.count("/") > 1 or "\\" in source


def _from_pretrained(path: str, source: str):
    from transformers import BertForPreTraining

    try:
        model, info = BertForPreTraining.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError) as error:
        where = "folder" if Path(path).exists() else "folder or hub id"
        raise BertpipeError(f"cannot load a BERT model from {source} (a {where} with config.json and weights): {str(error).splitlines()[0]}") from error
    if getattr(model.config, "model_type", "") != "bert":
        raise BertpipeError(f"{source} holds a {model.config.model_type!r} model; init_model must be a BERT checkpoint")
    missing = sorted(info.get("missing_keys", []))
    heads = [key for key in missing if key.startswith("cls.")]
    if heads:
        log.warning("%s has no pretraining heads; initialised %d head tensors (%s)", source, len(heads), ", ".join(heads))
    others = [key for key in missing if not key.startswith("cls.")]
    if others:
        log.warning("%s lacks %d encoder tensors, newly initialised: %s", source, len(others), ", ".join(others[:8]))
    return model


def check_vocab_size(model, vocab_size: int, where: str) -> None:
    if model.config.vocab_size != vocab_size:
        raise BertpipeError(
            f"the model has a {model.config.vocab_size}-token vocab but {where} has {vocab_size} tokens; "
            "use the vocab the model was trained with (export it with `bertpipe export-vocab --source <model>`)"
        )


class MaskedPretrainingModel(nn.Module):
    """BertForPreTraining's forward, with the MLM head applied only at the masked positions.

    The vocab projection is the largest matmul of a small BERT; running it on the ~15%
    masked positions instead of every position is 2.3-2.7x faster on CPU and saves
    the [B, L, V] logits tensor on GPUs. Returns (mlm_logits [n_masked, V], nsp_logits [n_instances, 2]).

    Packed batches (components.core.batches.collate_packed: a batch's instances in one row) also
    pass position_ids, each instance's [CLS] location and the attention layout: attention runs per
    instance on groups of similar widths (components.core.grouped_attention), and NSP reads every
    instance's own [CLS] through the pooler.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, mlm_batch_index, mlm_positions, position_ids=None, cls_positions=None,
                attention_slots=None, attention_group_counts=None, attention_inverse=None):
        if attention_slots is not None:
            attention_mask = InstanceGroups(attention_slots, attention_group_counts, attention_inverse)
        encoded = self.model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids, return_dict=True)
        hidden = encoded.last_hidden_state
        mlm_logits = self.model.cls.predictions(hidden[mlm_batch_index, mlm_positions])
        pooled = encoded.pooler_output if cls_positions is None else self.model.bert.pooler(hidden[0, cls_positions].unsqueeze(1))
        return mlm_logits, self.model.cls.seq_relationship(pooled)


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "mlm_batch_index", "mlm_positions")
PACKED_INPUTS = ("position_ids", "cls_positions", "attention_slots", "attention_group_counts", "attention_inverse")


def inputs_of(batch: dict) -> dict:
    """The forward's keyword arguments from a batch, packed or not."""
    return {name: batch[name] for name in MODEL_INPUTS + PACKED_INPUTS if name in batch}


def pretraining_losses(mlm_logits, nsp_logits, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mlm loss: mean over masked tokens, nsp loss: mean over sequences), computed in fp32."""
    functional = nn.functional
    mlm_loss = functional.cross_entropy(mlm_logits.float(), batch["mlm_labels"])
    nsp_loss = functional.cross_entropy(nsp_logits.float(), batch["next_sentence_label"])
    return mlm_loss, nsp_loss
