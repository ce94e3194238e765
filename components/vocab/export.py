"""The export-vocab step: a WordPiece vocab from a pretrained tokenizer, or trained on the corpus.

Writes the vocab folder described in components.core.vocab_files.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path

from components.core import demo_checkpoint, storage
from components.core.content_key import cache_uri, content_key, source_fingerprint, tokenizer_fingerprint
from components.core.corpus import Corpus, CorpusSettings
from components.core.errors import BertpipeError
from components.core.settings import check
from components.core.tracking import Tracking, log_metrics, step_run
from components.core.vocab_files import INFO_FILE, SPECIAL_TOKENS, VOCAB_FILE, check_special_tokens, tokenizer_for, vocab_file_bytes
from components.vocab.settings import VocabSettings

log = logging.getLogger(__name__)

# Bump when a code change makes a different vocab folder from the same inputs and settings (it changes every vocab key).
VOCAB_FORMAT = 1


def tokens_from_pretrained(source: str) -> tuple[list[str], bool]:
    """Vocab tokens (in id order) and lower-casing of a tokenizer folder, s3:// folder, hub id or "demo" (core.demo_checkpoint)."""
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
    return load(demo_checkpoint.resolve(source))


def _train_wordpiece(corpus: str, vocab_size: int, lowercase: bool, corpus_settings: CorpusSettings) -> tuple[list[str], dict]:
    """The vocab tokens and the corpus counts (documents read, dropped, duplicates)."""
    from tokenizers import BertWordPieceTokenizer

    # WordPiece only needs words: raw documents are read cleaned and deduplicated but not sentence-split.
    reader = Corpus(corpus, corpus_settings)

    def lines():
        for document in reader.documents(split=False):
            yield from document

    tokenizer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True, handle_chinese_chars=True)
    tokenizer.train_from_iterator(lines(), vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    log.info("corpus %s (%s): %s", corpus, reader.format, reader.counts.describe())
    learned = set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS)
    if not learned:
        raise BertpipeError(f"corpus {corpus} is empty: no vocab could be trained")
    # The trainer's id order varies between runs (ties broken by thread timing); WordPiece
    # only needs the set, so sort it to make the vocab file reproducible.
    return list(SPECIAL_TOKENS) + sorted(learned, key=lambda token: (token.startswith("##"), token)), reader.counts.as_dict()


def vocab_key(source: str, corpus: str, settings: VocabSettings, corpus_settings: CorpusSettings, fingerprint: str = "") -> str:
    """What the vocab is made from and how: equal keys, equal vocab folders (`fingerprint`: source_fingerprint of the
    tokenizer exported, else of the corpus; computed here when not given)."""
    if source:  # an exported vocab does not read the corpus
        return content_key("vocab", VOCAB_FORMAT, "export", source, fingerprint or tokenizer_fingerprint(source), asdict(settings))
    return content_key("vocab", VOCAB_FORMAT, "train", corpus, fingerprint or source_fingerprint(corpus), asdict(settings), asdict(corpus_settings))


def vocab_location(artifact_root: str, source: str, corpus: str, settings: VocabSettings, corpus_settings: CorpusSettings, fingerprint: str) -> str:
    """The content-keyed vocab folder of a pipeline run: the same inputs and settings, the same folder."""
    return cache_uri(artifact_root, "vocab", vocab_key(source, corpus, settings, corpus_settings, fingerprint))


def _reusable(output_uri: str, key: str) -> dict | None:
    """The vocab_info of a complete, verified vocab folder at output_uri made with this key, else None."""
    try:
        storage.read_published(output_uri)  # refuses a folder that is absent or half-written
        with storage.local_dir(output_uri) as folder:  # verifies every file's checksum
            info = storage.read_json(str(folder / INFO_FILE))
    except (BertpipeError, OSError, ValueError):
        return None
    return info if info.get("content_key") == key else None


def export_vocab(output_uri: str, *, source: str = "", corpus: str = "", settings: VocabSettings = VocabSettings(),
                 corpus_settings: CorpusSettings = CorpusSettings(), tracking: Tracking | None = None, fingerprint: str = "") -> dict:
    """Write a vocab folder to output_uri: the vocab of `source` (a tokenizer folder, s3:// folder or hub id)
    when given, else a WordPiece vocab trained on `corpus` (read with `corpus_settings`).

    A folder already there that is complete, verified and made from the same inputs and settings
    (its content key, see vocab_key) is reused as it is. Returns the vocab_info dict ("reused": whether it was).
    """
    check(settings, "export-vocab")
    check(corpus_settings, "export-vocab")
    if not (source or corpus):
        raise BertpipeError("export-vocab needs --source (a tokenizer to export) or --corpus (to train a vocab on)")
    key = vocab_key(source, corpus, settings, corpus_settings, fingerprint)
    reused = _reusable(output_uri, key)
    if reused:
        log.info("reused the vocab at %s: complete, verified and made from the same inputs and settings (content key %s)", output_uri, key)
        return {**reused, "reused": True}
    storage.check_output(output_uri)
    counts: dict = {}
    if tracking is None:
        return _export_vocab(output_uri, source, corpus, settings, corpus_settings, counts, key)
    import mlflow

    params = {"source": source, "corpus": corpus, "vocab_size": settings.vocab_size, "lowercase": settings.lowercase}
    if corpus and not source:
        params.update(asdict(corpus_settings))
    with step_run(tracking, "export-vocab", params):
        info = _export_vocab(output_uri, source, corpus, settings, corpus_settings, counts, key)
        log_metrics({"vocab_size": info["size"], **{f"corpus/{name}": value for name, value in counts.items()}})
        mlflow.set_tags({"vocab_sha256": info["sha256"], "vocab_uri": output_uri})
    return info


def _export_vocab(output_uri: str, source: str, corpus: str, settings: VocabSettings, corpus_settings: CorpusSettings, counts: dict, key: str) -> dict:
    """The vocab folder; `counts` gets the corpus counts when the vocab is trained."""
    vocab_size, lowercase = settings.vocab_size, settings.lowercase_flag
    if source:
        if corpus:
            log.info("exporting the vocab of %s; the corpus is not used for the vocab", source)
        tokens, source_lowercase = tokens_from_pretrained(source)
        lowercase = source_lowercase if lowercase is None else lowercase
        origin = source
        log.info("exporting %d-token vocab from %s (lowercase=%s)", len(tokens), source, lowercase)
    else:
        lowercase = True if lowercase is None else lowercase
        log.info("training a %d-token WordPiece vocab on %s (lowercase=%s)", vocab_size, corpus, lowercase)
        tokens, corpus_counts = _train_wordpiece(corpus, vocab_size, lowercase, corpus_settings)
        counts.update(corpus_counts)
        origin = f"trained on {corpus}"
    check_special_tokens(tokens, origin)
    if len(set(tokens)) != len(tokens):
        raise BertpipeError(f"vocab from {origin} repeats tokens; every line of vocab.txt must be unique")

    vocab_bytes = vocab_file_bytes(tokens)
    info = {"lowercase": lowercase, "size": len(tokens), "sha256": hashlib.sha256(vocab_bytes).hexdigest(), "source": origin, "content_key": key}
    with storage.staged_dir(output_uri) as staging:
        (staging / VOCAB_FILE).write_bytes(vocab_bytes)
        tokenizer_for(staging / VOCAB_FILE, lowercase).save_pretrained(str(staging))
        storage.write_json(str(staging / INFO_FILE), info)
    log.info("vocab written to %s (%d tokens, sha256 %s)", output_uri, info["size"], info["sha256"][:12])
    return {**info, "reused": False}
