"""Build components/demo_data/pd-demo-sources.parquet, the probe's labeled set: which source a passage comes from.

Source: the team's public-domain corpus (../shared/data/pd-corpus.txt.gz, 3,756
documents). Its documents come in blocks, one per source, which is how they are
told apart: 1-42 are Shakespeare's plays (each opens with "by William
Shakespeare"), 43-311 Austen's six novels by chapter (from "Emma Woodhouse,
handsome, clever, and rich"), 312-1698 the World English Bible by chapter (from
"In the beginning, God created"; 1699 ends the Bible with its glossary), and
1701-3756 Jargon File entries (1700 is its front matter). The two boundary
documents are skipped. The demo corpus is every tenth document (1, 11, 21, ...);
passages come only from the other nine tenths, so the probe never classifies
text the demo model was pretrained on.

A passage is consecutive sentences of one document, 150-600 characters; 200 per
source; split by document (a document's passages are all train or all test), a
fifth of the documents to test. Deterministic: `python tests/make_probe_set.py`
rewrites the same file, and tests/test_probe.py checks it.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

SOURCES = (("shakespeare", 1, 42), ("austen", 43, 311), ("bible", 312, 1698), ("jargon", 1701, 3756))
PER_SOURCE = 200
MIN_CHARS, MAX_CHARS = 150, 600
FULL_CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pd-corpus.txt.gz"
OUTPUT = Path(__file__).resolve().parents[1] / "components" / "demo_data" / "pd-demo-sources.parquet"


def passage_at(lines: list[str], start: int) -> str | None:
    text = ""
    for line in lines[start:]:
        text = f"{text} {line}".strip()
        if len(text) >= MIN_CHARS:
            break
    if len(text) < MIN_CHARS:
        return None
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS].rsplit(" ", 1)[0]


def build_rows(corpus: str) -> list[dict]:
    from components.core.corpus import iter_documents

    documents = list(iter_documents(corpus))
    rng = random.Random(14)
    rows = []
    for label, first, last in SOURCES:
        candidates = [number for number in range(first, last + 1) if (number - 1) % 10]  # not in the demo corpus
        rng.shuffle(candidates)
        per_document = -(-PER_SOURCE // len(candidates))  # Shakespeare: few, long documents
        taken = []
        for number in candidates:
            lines = documents[number - 1]
            skip = 60 if label == "shakespeare" else 0  # past the dramatis personae
            starts = sorted(rng.sample(range(skip, len(lines)), min(per_document, max(0, len(lines) - skip))))
            passages = [p for p in (passage_at(lines, s) for s in starts) if p]
            split = "test" if int(hashlib.sha256(f"{label}-{number}".encode()).hexdigest(), 16) % 5 == 0 else "train"
            taken += [{"text": p, "label": label, "split": split, "document": number} for p in passages]
            if len(taken) >= PER_SOURCE:
                break
        rows += taken[:PER_SOURCE]
    return rows


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = sys.argv[1] if len(sys.argv) > 1 else str(FULL_CORPUS)
    rows = build_rows(corpus)
    pq.write_table(pa.Table.from_pylist(rows), OUTPUT, compression="zstd")
    print(f"wrote {OUTPUT}: {len(rows)} passages, {OUTPUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
