"""The vocab step: export a WordPiece vocab from a pretrained tokenizer, or train one on the corpus.

The output folder is what every later step reads:

    vocab.txt         one token per line; the line number is the token id
    tokenizer.json    the matching fast tokenizer (+ tokenizer_config.json)
    vocab_info.json   {"lowercase", "size", "sha256" (of vocab.txt), "source"}
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from components import storage
from components.errors import BertpipeError
from components.tracking import Tracking, log_metrics, step_run

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_FILE = "vocab.txt"
INFO_FILE = "vocab_info.json"


def check_special_tokens(tokens: list[str], where: str) -> None:
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise BertpipeError(f"vocab from {where} lacks {', '.join(missing)}; a BERT vocab needs {', '.join(SPECIAL_TOKENS)}")


def tokens_from_pretrained(source: str) -> tuple[list[str], bool]:
    """Vocab tokens (in id order) and lower-casing of a tokenizer folder, s3:// folder or hub id."""
    from transformers import AutoTokenizer

    def load(path: str):
        local_vocab = Path(path, VOCAB_FILE)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as error:
            if not local_vocab.is_file():
                raise BertpipeError(f"no tokenizer or vocab.txt found at {source}: {error}") from error
            return local_vocab.read_text(encoding="utf-8").splitlines(), True
        vocab = tokenizer.get_vocab()
        if not vocab:
            raise BertpipeError(f"tokenizer at {source} has no WordPiece vocab")
        ordered = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        return ordered, bool(getattr(tokenizer, "do_lower_case", True))

    if storage.is_s3(source):
        with storage.local_dir(source) as folder:
            return load(str(folder))
    return load(source)


def _train_wordpiece(corpus: str, vocab_size: int, lowercase: bool) -> list[str]:
    from tokenizers import BertWordPieceTokenizer

    from components.corpus import iter_documents

    def lines():
        for document in iter_documents(corpus):
            yield from document

    tokenizer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True, handle_chinese_chars=True)
    tokenizer.train_from_iterator(lines(), vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    learned = set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS)
    if not learned:
        raise BertpipeError(f"corpus {corpus} is empty: no vocab could be trained")
    # The trainer's id order varies between runs (ties broken by thread timing); WordPiece
    # only needs the set, so sort it to make the vocab file reproducible.
    return list(SPECIAL_TOKENS) + sorted(learned, key=lambda token: (token.startswith("##"), token))


def export_vocab(
    output_uri: str, *, source: str = "", corpus: str = "", vocab_size: int = 8000, lowercase: bool | None = None, tracking: Tracking | None = None
) -> dict:
    """Write a vocab folder to output_uri, from `source` (a tokenizer) or trained on `corpus`.

    Returns the vocab_info dict. `lowercase=None` keeps the source tokenizer's
    setting (or lower-cases a trained vocab).
    """
    if tracking is None:
        return _export_vocab(output_uri, source, corpus, vocab_size, lowercase)
    import mlflow

    params = {"source": source, "corpus": corpus, "vocab_size": vocab_size, "lowercase": lowercase}
    with step_run(tracking, "export-vocab", params):
        info = _export_vocab(output_uri, source, corpus, vocab_size, lowercase)
        log_metrics({"vocab_size": info["size"]})
        mlflow.set_tags({"vocab_sha256": info["sha256"], "vocab_uri": output_uri})
    return info


def _export_vocab(output_uri: str, source: str, corpus: str, vocab_size: int, lowercase: bool | None) -> dict:
    if bool(source) == bool(corpus):
        raise BertpipeError("export-vocab needs exactly one of --source (a tokenizer) or --corpus (to train a vocab)")
    if source:
        tokens, source_lowercase = tokens_from_pretrained(source)
        lowercase = source_lowercase if lowercase is None else lowercase
        origin = source
        log.info("exporting %d-token vocab from %s (lowercase=%s)", len(tokens), source, lowercase)
    else:
        lowercase = True if lowercase is None else lowercase
        log.info("training a %d-token WordPiece vocab on %s (lowercase=%s)", vocab_size, corpus, lowercase)
        tokens = _train_wordpiece(corpus, vocab_size, lowercase)
        origin = f"trained on {corpus}"
    check_special_tokens(tokens, origin)
    if len(set(tokens)) != len(tokens):
        raise BertpipeError(f"vocab from {origin} repeats tokens; every line of vocab.txt must be unique")

    vocab_bytes = vocab_file_bytes(tokens)
    info = {"lowercase": lowercase, "size": len(tokens), "sha256": hashlib.sha256(vocab_bytes).hexdigest(), "source": origin}
    with storage.staged_dir(output_uri) as staging:
        (staging / VOCAB_FILE).write_bytes(vocab_bytes)
        _tokenizer_for(staging / VOCAB_FILE, lowercase).save_pretrained(str(staging))
        storage.write_json(str(staging / INFO_FILE), info)
    log.info("vocab written to %s (%d tokens, sha256 %s)", output_uri, info["size"], info["sha256"][:12])
    return info


def vocab_file_bytes(tokens: list[str]) -> bytes:
    """vocab.txt as bertpipe writes it (one token per line, ids are line numbers): its sha256 identifies the vocab."""
    return ("\n".join(tokens) + "\n").encode("utf-8")


def _tokenizer_for(vocab_file: Path, lowercase: bool):
    from transformers import BertTokenizerFast

    # BertTokenizerFast(vocab_file=...) is silently ignored in transformers 5: pass vocab=.
    return BertTokenizerFast(vocab=str(vocab_file), do_lower_case=lowercase, strip_accents=None if lowercase else False)


def load_vocab_info(vocab_uri: str) -> dict:
    info_uri = storage.join(vocab_uri, INFO_FILE)
    if not storage.exists(info_uri):
        raise BertpipeError(f"{vocab_uri} is not a vocab folder (no {INFO_FILE}); run `bertpipe export-vocab` first")
    return storage.read_json(info_uri)


def load_vocab_tokens(vocab_uri: str) -> list[str]:
    tokens = storage.read_text(storage.join(vocab_uri, VOCAB_FILE)).splitlines()
    check_special_tokens(tokens, vocab_uri)
    return tokens


def load_tokenizer(vocab_uri: str):
    """The fast tokenizer of a vocab folder (local or s3://)."""
    info = load_vocab_info(vocab_uri)
    with storage.local_dir(vocab_uri) as folder:
        return _tokenizer_for(folder / VOCAB_FILE, info["lowercase"])
