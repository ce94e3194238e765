"""The vocab folder every step after export-vocab reads (the format is shared; making it is the vocab step's).

    vocab.txt         one token per line; the line number is the token id
    tokenizer.json    the matching fast tokenizer (+ tokenizer_config.json)
    vocab_info.json   {"lowercase", "size", "sha256" (of vocab.txt), "source", "content_key" (what it was made from, see export-vocab)}
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from components.core import storage
from components.core.errors import BertpipeError

MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", MASK_TOKEN)
VOCAB_FILE = "vocab.txt"
INFO_FILE = "vocab_info.json"


def check_special_tokens(tokens: list[str], where: str) -> None:
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise BertpipeError(f"vocab from {where} lacks {', '.join(missing)}; a BERT vocab needs {', '.join(SPECIAL_TOKENS)}")


def vocab_file_bytes(tokens: list[str]) -> bytes:
    """vocab.txt as bertpipe writes it (one token per line, ids are line numbers): its sha256 identifies the vocab."""
    return ("\n".join(tokens) + "\n").encode("utf-8")


def tokenizer_for(vocab_file: Path, lowercase: bool):
    from transformers import BertTokenizerFast

    # BertTokenizerFast(vocab_file=...) is silently ignored in transformers 5: pass vocab=.
    return BertTokenizerFast(vocab=str(vocab_file), do_lower_case=lowercase, strip_accents=None if lowercase else False)


def load_vocab_info(vocab_uri: str) -> dict:
    info_uri = storage.join(vocab_uri, INFO_FILE)
    if not storage.exists(info_uri):
        raise BertpipeError(f"{vocab_uri} is not a vocab folder (no {INFO_FILE}); run `bertpipe export-vocab` first")
    return storage.read_json(info_uri)


def load_vocab_tokens(vocab_uri: str) -> list[str]:
    """The tokens of a vocab folder, after checking vocab.txt against the sha256 recorded beside it."""
    data = storage.read_bytes(storage.join(vocab_uri, VOCAB_FILE))
    recorded = load_vocab_info(vocab_uri).get("sha256")
    if recorded and hashlib.sha256(data).hexdigest() != recorded:
        raise BertpipeError(
            f"{vocab_uri}/{VOCAB_FILE} was changed after export (its sha256 is not the one in {INFO_FILE}); "
            "export the vocab again instead of editing it"
        )
    tokens = data.decode("utf-8").splitlines()
    check_special_tokens(tokens, vocab_uri)
    return tokens


def mask_token_id(vocab_uri: str) -> int:
    """The id of [MASK] in a vocab folder (4 in a vocab bertpipe trained, 103 in bert-base's)."""
    return load_vocab_tokens(vocab_uri).index(MASK_TOKEN)
