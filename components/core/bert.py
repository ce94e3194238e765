"""BertForPreTraining in plain torch: the trainer's model, a twin of transformers' class.

Importing transformers' BERT pulls in most of transformers (modeling_utils, generation,
torch._dynamo, torch.distributed.tensor, scipy): 5-10 s on a 2-core machine, before the first
training step could run. This twin has the same modules, parameter names, initialisation
(normal(0, initializer_range), zero biases, zero [PAD] embedding, tied decoder) and forward
(SDPA attention, exact GELU), and saves the folder transformers writes (config.json +
model.safetensors without the tied keys), so everything downstream loads the trained model with
transformers' own BertForPreTraining. tests/test_bert.py holds the two to equal outputs and gradients.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional

# transformers leaves these keys out of the file: they are the word embeddings and the prediction bias.
TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight", "cls.predictions.decoder.bias": "cls.predictions.bias"}


@dataclass
class BertConfig:
    """The fields of transformers' BertConfig this model reads (its config.json accepts them as they are). As there,
    the modules read it when built: a change afterwards (dropout set to 0 before saving) reaches only the saved folder."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    @classmethod
    def of(cls, config) -> "BertConfig":
        """From any object with these attributes (transformers' BertConfig)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def to_json(self) -> dict:
        return {"architectures": ["BertForPreTraining"], "model_type": "bert", **asdict(self), "tie_word_embeddings": True, "dtype": "float32"}


class Encoded(NamedTuple):
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


class _Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embedded = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embedded))


class _SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden, mask):
        dropout_p = self.dropout.p if self.training else 0.0
        if mask is not None and not isinstance(mask, torch.Tensor):  # a packed batch's per-instance layout (components.core.grouped_attention)
            return mask.attend(self.query(hidden), self.key(hidden), self.value(hidden), self.heads, dropout_p)
        shape = (*hidden.shape[:2], self.heads, -1)
        query, key, value = (projection(hidden).view(shape).transpose(1, 2) for projection in (self.query, self.key, self.value))
        attended = functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout_p)
        return attended.transpose(1, 2).reshape(hidden.shape)


class _Output(nn.Module):
    """dense, dropout, then LayerNorm over the residual sum (BertSelfOutput and BertOutput)."""

    def __init__(self, config: BertConfig, width: int):
        super().__init__()
        self.dense = nn.Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class _Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _Output(config, config.hidden_size)

    def forward(self, hidden, mask):
        return self.output(self.self(hidden, mask), hidden)


class _Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden):
        return functional.gelu(self.dense(hidden))


class _Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _Output(config, config.intermediate_size)

    def forward(self, hidden, mask):
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class _BertModel(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.pooler = _Pooler(config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, return_dict=True):
        """attention_mask: [B, L] with 1 at real tokens, or a packed batch's components.core.grouped_attention.InstanceGroups."""
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
            attention_mask = attention_mask[:, None, None, :].bool()
        hidden = self.embeddings(input_ids, token_type_ids, position_ids)
        for layer in self.encoder.layer:
            hidden = layer(hidden, attention_mask)
        return Encoded(hidden, self.pooler(hidden))


class _PredictionTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden):
        return self.LayerNorm(functional.gelu(self.dense(hidden)))


class _Predictions(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = _PredictionTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.decoder.weight = word_embeddings.weight
        self.bias = self.decoder.bias

    def forward(self, hidden):
        return self.decoder(self.transform(hidden))


class _Heads(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = _Predictions(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertForPreTraining(nn.Module):
    """`.bert` (embeddings, encoder, pooler) and `.cls` (MLM and NSP heads), named as in transformers."""

    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_act != "gelu":
            raise ValueError(f"hidden_act {config.hidden_act!r}: this model implements BERT's exact gelu only")
        self.config = config
        self.bert = _BertModel(config)
        self.cls = _Heads(config, self.bert.embeddings.word_embeddings)
        self.apply(self._initialise)

    def _initialise(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        with torch.no_grad():
            if isinstance(module, nn.Linear):
                if module is not self.cls.predictions.decoder:  # its weight is the word embeddings'
                    module.weight.normal_(0.0, std)
                module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def save_pretrained(self, folder: str) -> None:
        """config.json and model.safetensors as transformers' save_pretrained writes them (tied keys left out)."""
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.detach().contiguous() for name, tensor in self.state_dict().items() if name not in TIED}
        save_file(tensors, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
        (Path(folder) / "config.json").write_text(json.dumps(self.config.to_json(), indent=2, sort_keys=True) + "\n")


def from_transformers(model) -> BertForPreTraining:
    """The twin of a transformers BertForPreTraining, with its weights (for a phase that starts from a model folder)."""
    twin = BertForPreTraining(BertConfig.of(model.config))
    twin.load_state_dict(model.state_dict())
    return twin


def to_transformers(model: BertForPreTraining):
    """transformers' own BertForPreTraining with this model's weights (references in tests and benchmarks)."""
    import transformers

    reference = transformers.BertForPreTraining(transformers.BertConfig(**asdict(model.config)))
    reference.load_state_dict(model.state_dict())
    return reference
