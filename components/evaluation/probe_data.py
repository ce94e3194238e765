"""Labeled text for the downstream probe: CSV, JSON Lines or Parquet (optionally .gz), local or s3://.

A text column and a label column; a split column with "train"/"test" values,
or else a seeded split by `test_fraction`. "demo" is the bundled set of
passages labeled with the source they come from (tests/make_probe_set.py).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.core import storage
from components.core.errors import BertpipeError

DEMO_PROBE_SET = str(Path(__file__).resolve().parents[1] / "demo_data" / "pd-demo-sources.parquet")
FORMATS = (".csv", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class LabeledSplits:
    train_texts: list[str]
    train_labels: np.ndarray  # class indices into `classes`
    test_texts: list[str]
    test_labels: np.ndarray
    classes: tuple[str, ...]


def _read_table(uri: str):
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    name = uri.lower().removesuffix(".gz")
    kind = next((suffix for suffix in FORMATS if name.endswith(suffix)), None)
    if kind is None:
        raise BertpipeError(f"probe dataset {uri}: unknown format; name it .csv, .jsonl or .parquet (optionally .gz)")
    data = storage.read_bytes(uri)
    if uri.lower().endswith(".gz"):
        data = gzip.decompress(data)
    try:
        if kind == ".csv":
            return pyarrow.csv.read_csv(io.BytesIO(data))
        if kind == ".parquet":
            return pyarrow.parquet.read_table(io.BytesIO(data))
        return pyarrow.json.read_json(io.BytesIO(data))
    except Exception as error:  # pyarrow's parse errors have no common base worth naming
        raise BertpipeError(f"cannot read probe dataset {uri} as {kind[1:]}: {str(error).splitlines()[0]}") from error


def load_labeled(dataset: str, *, text_column: str, label_column: str, split_column: str, test_fraction: float, seed: int) -> LabeledSplits:
    """Train and test texts with their labels, checked: two classes at least, no label at test time that training never saw."""
    uri = DEMO_PROBE_SET if dataset == "demo" else dataset
    table = _read_table(uri)
    missing = [column for column in (text_column, label_column) if column not in table.column_names]
    if missing:
        raise BertpipeError(f"probe dataset {uri} has no column {', '.join(map(repr, missing))}; its columns: {', '.join(table.column_names)}")
    texts = ["" if text is None else str(text) for text in table.column(text_column).to_pylist()]
    labels = [None if label is None else str(label) for label in table.column(label_column).to_pylist()]
    unlabeled = sum(label is None or not text.strip() for text, label in zip(texts, labels))
    if unlabeled:
        raise BertpipeError(f"probe dataset {uri}: {unlabeled} rows have an empty text or no label; drop or fill them")
    if split_column in table.column_names:
        splits = [str(value) for value in table.column(split_column).to_pylist()]
        odd = sorted(set(splits) - {"train", "test"})
        if odd:
            raise BertpipeError(f"probe dataset {uri}: column {split_column!r} must hold 'train' or 'test', not {', '.join(map(repr, odd[:5]))}")
        is_test = np.array([split == "test" for split in splits])
    else:
        is_test = np.zeros(len(texts), dtype=bool)
        is_test[np.random.default_rng(seed).permutation(len(texts))[: round(len(texts) * test_fraction)]] = True
    train = [i for i in range(len(texts)) if not is_test[i]]
    test = [i for i in range(len(texts)) if is_test[i]]
    if not train or not test:
        raise BertpipeError(f"probe dataset {uri} has {len(train)} training and {len(test)} test rows; it needs both")
    classes = tuple(sorted({labels[i] for i in train}))
    if len(classes) < 2:
        raise BertpipeError(f"probe dataset {uri} has one class ({classes[0]!r}) in its training rows; a classifier needs at least two")
    unknown = sorted({labels[i] for i in test} - set(classes))
    if unknown:
        count = sum(labels[i] in unknown for i in test)
        raise BertpipeError(f"probe dataset {uri}: the test rows have labels the training rows never show: {', '.join(map(repr, unknown[:5]))} "
                            f"({count} rows); add training examples of them or drop those rows")
    index = {label: k for k, label in enumerate(classes)}
    return LabeledSplits([texts[i] for i in train], np.array([index[labels[i]] for i in train]),
                         [texts[i] for i in test], np.array([index[labels[i]] for i in test]), classes)
