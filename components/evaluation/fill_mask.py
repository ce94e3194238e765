"""`bertpipe fill-mask`: try a trained model by hand, the top guesses for each [MASK] in a sentence.

The model is loaded exactly as evaluation loads it (`core.model_store.model_folder`): a
folder, an s3:// prefix or a registry URI such as models:/bert-pretraining@champion.
"""

from __future__ import annotations


import torch

from components.core import models
from components.core.errors import BertpipeError
from components.core.model_store import model_folder
from components.core.tracking import default_tracking_uri, mlflow_errors
from components.core.vocab_files import VOCAB_FILE, load_vocab_info, tokenizer_for

DEFAULT_REGISTERED_MODEL = "bert-pretraining"
MASK = "[MASK]"


def default_model_uri(tracking_uri: str) -> str:
    """The default registered model's champion, with a clear error when there is none yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = f"models:/{DEFAULT_REGISTERED_MODEL}@champion"
    with mlflow_errors(tracking_uri, f"looking up {uri}"):
        try:
            mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(DEFAULT_REGISTERED_MODEL, "champion")
        except MlflowException as error:
            if getattr(error, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            raise BertpipeError(
                f"{uri}: there is no champion in {tracking_uri} yet (a version becomes champion once it beats the trivial baselines); "
                f"name one with --model models:/{DEFAULT_REGISTERED_MODEL}/VERSION or a model folder"
            ) from error
    return uri


@torch.inference_mode()
def fill_mask(text: str, model_uri: str = "", *, top_k: int = 5, tracking_uri: str = "") -> dict:
    """Top-k tokens with their probabilities for each [MASK] in `text`, in order.

    Returns {"model_uri", "text", "filled" (text with each mask's best guess), "masks": [{"index",
    "predictions": [{"token", "score"}]}]}.
    """
    if MASK not in text:
        raise BertpipeError(f"the text has no {MASK}: put {MASK} where the model should guess a word, e.g. 'the [MASK] of denmark'")
    if top_k < 1:
        raise BertpipeError("--top-k must be at least 1")
    tracking_uri = tracking_uri or default_tracking_uri()
    model_uri = model_uri or default_model_uri(tracking_uri)
    with model_folder(model_uri, tracking_uri) as folder:
        if not (folder / VOCAB_FILE).is_file():
            raise BertpipeError(f"{model_uri} has no {VOCAB_FILE}; give a model folder written by train-phase or a registered version")
        model = models.load_model(str(folder))
        tokenizer = tokenizer_for(folder / VOCAB_FILE, load_vocab_info(str(folder))["lowercase"])
    encoded = tokenizer(text, return_tensors="pt")
    length = encoded["input_ids"].shape[1]
    if length > model.config.max_position_embeddings:
        raise BertpipeError(f"the text is {length} tokens long; the model takes at most {model.config.max_position_embeddings}")
    positions = (encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
    mlm_logits, _ = models.MaskedPretrainingModel(model).eval()(
        encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"], torch.zeros_like(positions), positions,
    )
    top = mlm_logits.float().softmax(-1).topk(min(top_k, mlm_logits.shape[-1]), dim=-1)
    masks = [
        {"index": index, "predictions": [{"token": tokenizer.convert_ids_to_tokens(token), "score": round(score, 6)}
                                         for token, score in zip(ids, scores)]}
        for index, (ids, scores) in enumerate(zip(top.indices.tolist(), top.values.tolist()), start=1)
    ]
    filled = text
    for mask in masks:
        filled = filled.replace(MASK, mask["predictions"][0]["token"], 1)
    return {"model_uri": model_uri, "text": text, "filled": filled, "masks": masks}


def format_table(result: dict) -> str:
    """The predictions as a table a person reads: one row per rank, one column per [MASK]."""
    masks = result["masks"]
    width = max([len(p["token"]) + 8 for mask in masks for p in mask["predictions"]] + [16])
    lines = [f"model: {result['model_uri']}", f"text:  {result['text']}", f"best:  {result['filled']}", ""]
    lines.append("rank  " + "".join(f"{MASK + ' ' + str(mask['index']):<{width}}" for mask in masks).rstrip())
    for rank in range(max(len(mask["predictions"]) for mask in masks)):
        cells = [f"{p['token']} {p['score']:.3f}" if (p := dict(enumerate(mask["predictions"])).get(rank)) else "" for mask in masks]
        lines.append(f"{rank + 1:>4}  " + "".join(f"{cell:<{width}}" for cell in cells).rstrip())
    return "\n".join(lines)
