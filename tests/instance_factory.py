"""Small instance shards for training/evaluation tests, built straight from the demo corpus.

Not Google's algorithm (that is components.data.instance_creation): runs of sentences packed to
about max_seq_length, 15% of positions masked (no whole-word masking; every one a [MASK] unless
eighty_ten_ten asks for Google's 80% [MASK], 10% random token, 10% unchanged), half of the B
segments random. Enough for a model to learn from, deterministic given a seed.
"""

from __future__ import annotations

import math
import random

from components.core import instances
from components.core import storage
from components.core.corpus import iter_documents
from components.vocab.export import VocabSettings, export_vocab
from components.core.vocab_files import VOCAB_FILE, load_vocab_info, tokenizer_for


def make_vocab(uri: str, vocab_size: int = 2000) -> str:
    export_vocab(uri, corpus="demo", settings=VocabSettings(vocab_size=vocab_size))
    return uri


def make_untrained_model(root, vocab_size: int, seed: int) -> str:
    """A freshly initialised tiny model folder with a demo vocab of `vocab_size` and its tokenizer files, under root."""
    import torch

    from components.core import models

    vocab = make_vocab(str(root / "vocab"), vocab_size=vocab_size)
    torch.manual_seed(seed)
    folder = root / "model"
    models.build_model("tiny", vocab_size).save_pretrained(str(folder))
    storage.download_dir(vocab, folder)
    return str(folder)


def tokenized_documents(tokenizer, max_documents: int = 200) -> list[list[list[int]]]:
    documents = []
    for document in iter_documents("demo"):
        encoded = [ids for ids in tokenizer(document, add_special_tokens=False)["input_ids"] if ids]
        if len(encoded) >= 2:
            documents.append(encoded)
        if len(documents) >= max_documents:
            break
    return documents


def make_rows(tokenizer, documents, count: int, max_seq_length: int, seed: int, eighty_ten_ten: bool = False) -> dict[str, list]:
    """Instances packed like Google's: segment A = a run of sentences, B = the next run (or, half the
    time, a run from another document), filled up to max_seq_length; 15% of tokens masked."""
    rng = random.Random(seed)
    cls, sep, mask = (tokenizer.convert_tokens_to_ids(t) for t in ("[CLS]", "[SEP]", "[MASK]"))
    rows = {name: [] for name in instances.SCHEMA.names}
    budget = max_seq_length - 3
    max_predictions = math.ceil(0.15 * max_seq_length)

    def run_of_sentences(document, start, length):
        tokens = []
        for sentence in document[start:]:
            if len(tokens) >= length:
                break
            tokens += sentence
        return tokens

    while len(rows["input_ids"]) < count:
        document = rng.choice(documents)
        split = rng.randrange(1, len(document))
        first = run_of_sentences(document, max(0, split - 1 - rng.randrange(4)), rng.randint(budget // 4, budget // 2))
        first = first[: budget // 2] if len(first) > budget else first
        is_random = rng.random() < 0.5
        other = rng.choice(documents)
        second = run_of_sentences(other, rng.randrange(len(other)), budget) if is_random else run_of_sentences(document, split, budget)
        if not second:
            continue
        while len(first) + len(second) > budget:
            (first if len(first) > len(second) else second).pop()
        ids = [cls, *first, sep, *second, sep]
        candidates = [i for i, token in enumerate(ids) if token not in (cls, sep)]
        positions = sorted(rng.sample(candidates, min(max_predictions, max(1, round(0.15 * len(candidates))))))
        labels = [ids[p] for p in positions]
        for p in positions:
            ids[p] = replacement(rng, mask, tokenizer.vocab_size, ids[p]) if eighty_ten_ten else mask
        rows["input_ids"].append(ids)
        rows["segment_a_length"].append(len(first) + 2)
        rows["masked_lm_positions"].append(positions)
        rows["masked_lm_ids"].append(labels)
        rows["next_sentence_label"].append(int(is_random))
    return rows


def replacement(rng: random.Random, mask: int, vocab_size: int, original: int) -> int:
    """Google's choice for a masked position: [MASK] 80% of the time, a random token 10%, the original 10%."""
    draw = rng.random()
    return mask if draw < 0.8 else rng.randrange(vocab_size) if draw < 0.9 else original


def load_tokenizer(vocab_uri: str):
    """The fast tokenizer of a vocab folder (local or s3://)."""
    with storage.local_dir(vocab_uri) as folder:
        return tokenizer_for(folder / VOCAB_FILE, load_vocab_info(vocab_uri)["lowercase"])


def make_data(data_uri: str, vocab_uri: str, *, max_seq_length: int = 128, shards: dict[str, list[int]] | None = None, seed: int = 0,
              instance_length: int | None = None, eighty_ten_ten: bool = False) -> str:
    """A data folder with the given shard sizes per split (default: train 2 x 96, dev 32, test 48); instances of
    about `instance_length` tokens (default: max_seq_length), as a corpus of short documents makes them;
    `eighty_ten_ten`: masked positions as Google fills them (make_rows)."""
    shards = shards or {"train": [96, 96], "dev": [32], "test": [48]}
    tokenizer = load_tokenizer(vocab_uri)
    documents = tokenized_documents(tokenizer)
    splits = {}
    for split_index, (split, sizes) in enumerate(shards.items()):
        entries, tokens = [], 0
        for index, size in enumerate(sizes):
            rows = make_rows(tokenizer, documents, size, instance_length or max_seq_length, seed=seed * 1000 + split_index * 100 + index,
                             eighty_ten_ten=eighty_ten_ten)
            path = instances.shard_path(split, index)
            entries.append({"path": path, **instances.write_shard(storage.join(data_uri, path), rows)})
            tokens += sum(map(len, rows["input_ids"]))
        splits[split] = {"num_documents": 0, "num_instances": sum(sizes), "num_tokens": tokens, "shards": entries}
    manifest = {
        "schema_version": instances.SCHEMA_VERSION,
        "max_seq_length": max_seq_length,
        "vocab_sha256": load_vocab_info(vocab_uri)["sha256"],
        "settings": {"factory": "tests.instance_factory", "seed": seed},
        "splits": splits,
        "statistics": {},
    }
    storage.write_json(storage.join(data_uri, instances.MANIFEST_FILE), manifest)
    return data_uri
