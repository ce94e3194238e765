"""Sentence splitting of raw documents with nupunkt (Punkt, its English model ships in the wheel).

Chosen on the demo corpus (whose one-sentence-per-line text is the reference): nupunkt
agrees best with its boundaries (F1 0.989 vs blingfire 0.962, sentencex 0.77, pysbd 0.73),
is maintained, pure Python (every platform the images run on) and 80-250x faster than pysbd
on long documents. Figures and the script: benchmarks/bench_corpus.py --segmenters.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _segmenter():
    import nupunkt

    return nupunkt.load("default")


def split_sentences(paragraphs: list[str]) -> list[str]:
    """The sentences of a document given as paragraphs (a paragraph break always ends a sentence)."""
    tokenize = _segmenter().tokenize
    return [sentence for paragraph in paragraphs for sentence in (part.strip() for part in tokenize(paragraph)) if sentence]
