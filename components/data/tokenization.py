"""Tokenize corpus lines exactly as Google's FullTokenizer does (basic tokenizer + WordPiece), fast.

Google's tokenizer splits a line at spaces first and treats each chunk on its own, so
each distinct space-separated chunk is tokenized once and its ids remembered (a
corpus repeats its chunks: a few hundred thousand distinct ones in millions). Most
chunks go through the Rust `tokenizers` pipeline (BertNormalizer, BertPreTokenizer,
WordPiece), which agrees with Google's Python tokenizer on them. The two disagree on a
few characters: unassigned and private-use code points (Rust drops them, Google keeps
them), one CJK range that `tokenizers` spells differently, and any character whose
case folding or accent stripping the two Unicode tables treat differently. Chunks that
hold such a character take the pure-Python path below, which follows Google's
rules step by step; so the ids match Google's on every line, at Rust speed on almost all.

The fast tokenizer is built here from the vocab, not loaded from tokenizer.json: a
loaded one matches "[CLS]", "[MASK]"... written in the text as special tokens, where
Google's splits them into "[", "cls", "]".
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import chain

import numpy as np

from components.core.errors import BertpipeError

UNK = "[UNK]"
# Google's WordpieceTokenizer default (tokenizers' default is 100).
MAX_INPUT_CHARS_PER_WORD = 200
# encode_lines marks line ends with a chunk that tokenizes to an impossible id.
_LINE_END_CHUNK = "\n"
_LINE_END = -1
# Distinct chunks remembered (about 200 bytes each); past this the memory starts afresh.
_MAX_REMEMBERED_CHUNKS = 500_000
# New chunks are tokenized together, joined by one of these (ASCII punctuation: always a token of its own).
_SEPARATOR_CANDIDATES = "|~^#$%&*+=<>@\\_`{}"
_CHUNKS_PER_ENCODING = 20_000
_LONG_CHUNK = re.compile(r"\S{%d,}" % (MAX_INPUT_CHARS_PER_WORD + 1))
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_cjk(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _CJK_RANGES)


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_whitespace(char: str) -> bool:
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf")


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_on_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for char in word:
        if _is_punctuation(char):
            if current:
                pieces.append(current)
                current = ""
            pieces.append(char)
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def basic_tokenize(text: str, lowercase: bool) -> list[str]:
    """Google's BasicTokenizer: clean, space out CJK, split on whitespace, lower/strip accents, split punctuation."""
    cleaned = []
    for char in text:
        cp = ord(char)
        if cp == 0 or cp == 0xFFFD or _is_control(char):
            continue
        if _is_whitespace(char):
            cleaned.append(" ")
        elif _is_cjk(cp):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(char)
    words: list[str] = []
    for word in "".join(cleaned).split():
        if lowercase:
            word = _strip_accents(word.lower())
        words.extend(_split_on_punctuation(word))
    return " ".join(words).split()


class PythonWordPiece:
    """Google's tokenizer in pure Python, on token ids: the exact path for lines the fast one may get wrong."""

    def __init__(self, vocab: dict[str, int], lowercase: bool):
        self.vocab = vocab
        self.lowercase = lowercase
        self.unk_id = vocab[UNK]

    def word_ids(self, word: str) -> list[int]:
        if len(word) > MAX_INPUT_CHARS_PER_WORD:
            return [self.unk_id]
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return ids

    def tokenize(self, line: str) -> list[int]:
        return [i for word in basic_tokenize(line, self.lowercase) for i in self.word_ids(word)]


class CorpusTokenizer:
    """Lines -> WordPiece ids, identical to Google's FullTokenizer(vocab, do_lower_case)."""

    def __init__(self, vocab_tokens: list[str], lowercase: bool):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        if len(set(vocab_tokens)) != len(vocab_tokens):
            raise BertpipeError("vocab repeats tokens; every line of vocab.txt must be unique")
        self.vocab = {token: index for index, token in enumerate(vocab_tokens)}
        self.lowercase = lowercase
        self.python = PythonWordPiece(self.vocab, lowercase)
        self.fast = Tokenizer(models.WordPiece(self.vocab, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        self.fast.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
        self.fast.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._chunk_ids: dict[str, tuple[int, ...]] = {_LINE_END_CHUNK: (_LINE_END,)}
        self._separator = next(((c, self.vocab[c]) for c in _SEPARATOR_CANDIDATES if c in self.vocab), None)

    def _fast_is_exact(self, text: str) -> bool:
        return text.isascii() or all(_fast_agrees(char, self.lowercase) for char in set(text) if not char.isascii())

    def encode_lines(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(the ids of all lines one after another, int32; how many ids each line has).

        Google's tokenization splits at spaces before anything else and treats each
        space-separated chunk on its own, so a line's ids are its chunks' ids in a row.
        Chunks repeat (Zipf): each distinct one is tokenized once (by the Rust pipeline
        where it agrees with Google's, else in Python) and remembered.
        """
        chunks = ("\n".join(lines) + "\n").replace("\n", " \n ").split(" ")
        chunk_ids = self._chunk_ids
        missing = set(chunks).difference(chunk_ids)
        if missing:
            if len(chunk_ids) + len(missing) > _MAX_REMEMBERED_CHUNKS:
                chunk_ids.clear()
                chunk_ids[_LINE_END_CHUNK] = (_LINE_END,)
            self._learn(missing)
        ids = np.fromiter(chain.from_iterable(map(chunk_ids.__getitem__, chunks)), np.int32)
        ends = np.flatnonzero(ids == _LINE_END)
        if len(ends) != len(lines):
            raise ValueError("encode_lines takes lines without line breaks in them")
        lengths = np.diff(ends, prepend=-1) - 1
        return ids[ids != _LINE_END], lengths

    def _learn(self, chunks: set[str]) -> None:
        fast = [chunk for chunk in chunks if self._fast_is_exact(chunk)]
        separator = self._separator
        if separator is not None:
            joinable = [chunk for chunk in fast if separator[0] not in chunk]
            for start in range(0, len(joinable), _CHUNKS_PER_ENCODING):
                self._learn_joined(joinable[start:start + _CHUNKS_PER_ENCODING])
        alone = [chunk for chunk in fast if chunk not in self._chunk_ids]
        # encode_batch_fast skips the character offsets, which are not needed here.
        for chunk, encoding in zip(alone, self.fast.encode_batch_fast(alone, add_special_tokens=False)):
            self._chunk_ids[chunk] = tuple(encoding.ids)
        for chunk in chunks.difference(fast):
            self._chunk_ids[chunk] = tuple(self.python.tokenize(chunk))

    def _learn_joined(self, chunks: list[str]) -> None:
        """Tokenize many chunks as one text, "chunk | chunk | ...": one Rust call instead of one per chunk.

        The separator is a punctuation character that is a vocab token, so it always comes
        out as exactly one id; if the text holds as many of those ids as separators, no chunk
        made one and the ids split back into the chunks'. Otherwise the chunks stay unlearned
        (and are tokenized one by one).
        """
        character, separator_id = self._separator
        ids = self.fast.encode(f" {character} ".join(chunks), add_special_tokens=False).ids
        cuts = np.flatnonzero(np.array(ids) == separator_id).tolist()
        if len(cuts) != len(chunks) - 1:
            return
        for chunk, start, end in zip(chunks, [-1, *cuts], [*cuts, len(ids)]):
            self._chunk_ids[chunk] = tuple(ids[start + 1:end])

    def overlong_words(self, lines: list[str]) -> tuple[int, str]:
        """(how many words of the lines are longer than MAX_INPUT_CHARS_PER_WORD, the first of them): each becomes
        one [UNK], as in Google's tokenizer. Such "words" are rarely words: base64, a URL, a blob pasted into the text.
        Only space-free runs that long are looked at, with the Rust normalizer and pre-tokenizer."""
        count, example = 0, ""
        for chunk in _LONG_CHUNK.finditer("\n".join(lines)):
            words = self.fast.pre_tokenizer.pre_tokenize_str(self.fast.normalizer.normalize_str(chunk.group()))
            long_words = [word for word, _ in words if len(word) > MAX_INPUT_CHARS_PER_WORD]
            count += len(long_words)
            example = example or (long_words[0] if long_words else "")
        return count, example

    def tokenize_lines(self, lines: list[str]) -> list[list[int]]:
        """WordPiece ids of each line (an empty list where a line has no tokens)."""
        ids, lengths = self.encode_lines(lines)
        ends = np.cumsum(lengths)
        return [ids[end - length:end].tolist() for end, length in zip(ends, lengths)]


@lru_cache(maxsize=65536)
def _fast_agrees(char: str, lowercase: bool) -> bool:
    """Whether the Rust normalizer treats this non-ASCII character exactly as Google's Python does.

    Checked once per character by normalizing it alone and between letters, with both.
    """
    cp = ord(char)
    category = unicodedata.category(char)
    if category in ("Cn", "Co", "Cs") or _is_cjk(cp) or 0x2B810 <= cp <= 0x2CEAF:
        return False
    return _probe_fast(char, lowercase) == _probe_python(char, lowercase)


def _probe_python(char: str, lowercase: bool) -> list[str]:
    return [" ".join(basic_tokenize(text, lowercase)) for text in (char, f"a{char}b", f"{char}{char} x")]


@lru_cache(maxsize=2)
def _probe_pipeline(lowercase: bool):
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase)
    return normalizer, pre_tokenizers.BertPreTokenizer()


def _probe_fast(char: str, lowercase: bool) -> list[str]:
    normalizer, pre_tokenizer = _probe_pipeline(lowercase)
    results = []
    for text in (char, f"a{char}b", f"{char}{char} x"):
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        results.append(" ".join(word for word, _ in words))
    return results
