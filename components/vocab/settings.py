"""The export-vocab step's settings, apart from the step, so the CLI builds its flags without loading tokenizers."""

from __future__ import annotations

from dataclasses import dataclass

from components.core.settings import setting
from components.core.vocab_files import SPECIAL_TOKENS


@dataclass(frozen=True)
class VocabSettings:
    """How the vocab is made (the source tokenizer or the corpus are inputs, not settings)."""

    vocab_size: int = setting(8000, "size of the WordPiece vocab trained on the corpus (ignored when the vocab is exported)", minimum=len(SPECIAL_TOKENS) + 1)
    lowercase: str = setting("auto", "lower-case and strip accents ('auto' keeps the source tokenizer's setting; a trained vocab lower-cases)",
                             choices=("auto", "true", "false"))

    @property
    def lowercase_flag(self) -> bool | None:
        return {"auto": None, "true": True, "false": False}[self.lowercase]
