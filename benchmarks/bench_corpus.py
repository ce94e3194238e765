"""Raw JSONL -> sentences: bertpipe's corpus reader vs the obvious loop (json.loads + pysbd per document).

    PYTHONPATH=$PWD python benchmarks/bench_corpus.py [--corpus ../shared/data/pd-corpus.txt.gz] [--sample-mb 0.5] [--repeats 3]
    PYTHONPATH=$PWD python benchmarks/bench_corpus.py --segmenters     # speed and agreement of the candidate segmenters

The demo corpus (one sentence per line) becomes one JSONL document per line, its sentences
joined by spaces. Each contender runs in a fresh process (peak RSS of its process tree
sampled every 50 ms, as in bench_pretraining_data.py), repeats interleaved, medians printed.

1. Preparation alone on a random sample (pysbd needs ~100 s per MB on these long documents):
   the loop vs `Corpus.documents()` (NFC, whitespace, dedup, nupunkt), documents/s and MB/s.
2. The whole data step from raw JSONL (max_seq_length 128, dupe_factor 1, 1 and 2 workers)
   on the sample against the loop writing Google's format and then running the same step,
   then on the full corpus and on it 4x (distinct copies): memory should stay flat.
Needs pysbd (the `bench` extra) and nupunkt; same interpreter and environment for both sides.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pretraining_data import DEFAULT_CORPUS, _measure  # noqa: E402  (one RSS sampler for every benchmark)

LOOP = """
import json, time, pysbd
segmenter = pysbd.Segmenter(language="en", clean=False)
documents = sentences = 0
with open({jsonl!r}, encoding="utf-8") as handle, open({text_out!r}, "w", encoding="utf-8") as out:
    for line in handle:
        parts = [s.strip() for s in segmenter.segment(json.loads(line)["text"]) if s.strip()]
        out.write("\\n".join(parts) + "\\n\\n")
        documents += 1
        sentences += len(parts)
print(json.dumps({{"documents": documents, "sentences": sentences}}))
"""

OURS = """
import json
from components.core.corpus import Corpus
corpus = Corpus({jsonl!r})
for _ in corpus.documents():
    pass
print(json.dumps({{"documents": corpus.counts.documents, "sentences": corpus.counts.sentences}}))
"""

STEP = """
import json, tempfile
from components.core.corpus import CorpusSettings
from components.data.local import create_pretraining_data
from components.data.settings import DataSettings
out = tempfile.mkdtemp(dir={tmp!r})
manifest = create_pretraining_data({corpus!r}, {vocab!r}, out, settings=DataSettings(max_seq_length=128, dupe_factor=1, dev_fraction=0, test_fraction=0,
    shard_size_mb=2.0), num_workers={workers}, corpus_settings=CorpusSettings(min_document_chars=0))
print(json.dumps({{"instances": manifest["splits"]["train"]["num_instances"], "documents": manifest["corpus_reading"]["counts"]["documents"]}}))
"""

VOCAB = """
import json
from components.vocab.export import VocabSettings, export_vocab
export_vocab({out!r}, corpus={corpus!r}, settings=VocabSettings(vocab_size=8000))
print(json.dumps({{}}))
"""


def _documents(corpus: str) -> list[str]:
    """The corpus's documents as raw text: their sentences joined by spaces."""
    blocks = gzip.open(corpus, "rt", encoding="utf-8").read().split("\n\n")
    return [" ".join(line.strip() for line in block.splitlines() if line.strip()) for block in blocks if block.strip()]


def _write_jsonl(path: Path, texts: list[str]) -> float:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"text": text}) + "\n" for text in texts)
    return sum(len(text.encode()) for text in texts) / 1e6


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def _report(name: str, runs: list[dict], megabytes: float) -> None:
    seconds = _median(runs, "seconds")
    print(f"  {name:34s} {seconds:7.2f} s  {runs[0]['documents'] / seconds:9.1f} docs/s  {megabytes / seconds:6.2f} MB/s  "
          f"cpu {_median(runs, 'cpu_seconds'):6.1f} s  peak {max(r['peak_mb'] for r in runs):6.0f} MB")


def _interleaved(contenders: dict[str, str], repeats: int, env: dict) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, code in contenders.items():
            runs[name].append(_measure(code, env))
    return runs


def segmenters(corpus: str, sample_mb: float) -> None:
    """Speed and boundary agreement (precision/recall/F1 against the corpus's own lines) of each candidate."""
    import time

    blocks = [b.splitlines() for b in gzip.open(corpus, "rt", encoding="utf-8").read().split("\n\n") if b.strip()]
    random.Random(0).shuffle(blocks)
    sample, size = [], 0
    while size < sample_mb * 1e6:
        sample.append([line.strip() for line in blocks[len(sample)] if line.strip()])
        size += sum(len(line) + 1 for line in sample[-1])

    def ends(sentences):
        found, position = set(), 0
        for sentence in sentences:
            position += len("".join(sentence.split()))
            found.add(position)
        return found

    candidates = {}
    for name, build in (("nupunkt", lambda: __import__("nupunkt").load("default").tokenize),
                        ("pysbd", lambda: __import__("pysbd").Segmenter(language="en", clean=False).segment),
                        ("blingfire", lambda: lambda text: __import__("blingfire").text_to_sentences(text).split("\n")),
                        ("sentencex", lambda: lambda text: list(__import__("sentencex").segment("en", text)))):
        try:
            candidates[name] = build()
        except ImportError:
            print(f"  {name}: not installed, skipped")
    texts = [" ".join(document) for document in sample]
    for name, split in candidates.items():
        start = time.perf_counter()
        outputs = [split(text) for text in texts]
        seconds = time.perf_counter() - start
        hits = wrong = missed = 0
        for document, output in zip(sample, outputs):
            truth, found = ends(document), ends(output)
            hits, wrong, missed = hits + len(truth & found), wrong + len(found - truth), missed + len(truth - found)
        precision, recall = hits / (hits + wrong), hits / (hits + missed)
        print(f"  {name:10s} {size / 1e6 / seconds:6.2f} MB/s  precision {precision:.3f}  recall {recall:.3f}  "
              f"F1 {2 * precision * recall / (precision + recall):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    parser.add_argument("--sample-mb", type=float, default=0.5, help="size of the random sample both sides prepare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--segmenters", action="store_true", help="only compare the candidate segmenters")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if args.segmenters:
        segmenters(args.corpus, args.sample_mb)
        return
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    documents = _documents(args.corpus)
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        sample = list(documents)
        random.Random(0).shuffle(sample)
        cut = next(i for i in range(len(sample)) if sum(len(t) for t in sample[: i + 1]) >= args.sample_mb * 1e6) + 1
        sample_mb = _write_jsonl(Path(tmp, "sample.jsonl"), sample[:cut])
        full_mb = _write_jsonl(Path(tmp, "full.jsonl"), documents)
        # Four distinct copies (a marker per copy), so that deduplication does not drop them.
        four_mb = _write_jsonl(Path(tmp, "four.jsonl"), [f"{text} Copy {k}." for k in range(4) for text in documents])
        jsonl = {"sample": str(Path(tmp, "sample.jsonl")), "full": str(Path(tmp, "full.jsonl")), "four": str(Path(tmp, "four.jsonl"))}
        vocab = str(Path(tmp, "vocab"))
        _measure(VOCAB.format(out=vocab, corpus=args.corpus), env)

        print(f"\n1. preparation alone: {cut} documents, {sample_mb:.2f} MB of raw JSONL, {args.repeats} interleaved runs (median)")
        text_out = str(Path(tmp, "loop.txt"))
        prep = _interleaved({"loop": LOOP.format(jsonl=jsonl["sample"], text_out=text_out), "ours": OURS.format(jsonl=jsonl["sample"])}, args.repeats, env)
        _report("json.loads + pysbd loop", prep["loop"], sample_mb)
        _report("bertpipe Corpus.documents()", prep["ours"], sample_mb)
        print(f"  ratio: {_median(prep['loop'], 'seconds') / _median(prep['ours'], 'seconds'):.1f}x  "
              f"(sentences: loop {prep['loop'][0]['sentences']:,}, bertpipe {prep['ours'][0]['sentences']:,})")

        print(f"\n2. whole data step on the sample ({args.repeats} interleaved runs): the loop (timed in 1.) then the step on its text vs the step on raw JSONL")
        step_runs = _interleaved({
            "loop-step": STEP.format(tmp=tmp, corpus=text_out, vocab=vocab, workers=1),
            "ours-1": STEP.format(tmp=tmp, corpus=jsonl["sample"], vocab=vocab, workers=1),
            "ours-2": STEP.format(tmp=tmp, corpus=jsonl["sample"], vocab=vocab, workers=2),
        }, args.repeats, env)
        baseline = _median(prep["loop"], "seconds") + _median(step_runs["loop-step"], "seconds")
        print(f"  loop + step on its text: {baseline:.2f} s ({sample_mb / baseline:.3f} MB/s)")
        for workers in (1, 2):
            _report(f"bertpipe step, {workers} worker(s)", step_runs[f"ours-{workers}"], sample_mb)
            print(f"  ratio: {baseline / _median(step_runs[f'ours-{workers}'], 'seconds'):.1f}x")

        print("\n3. whole data step from raw JSONL, full corpus and 4x (memory should stay flat)")
        for name, megabytes in (("full", full_mb), ("four", four_mb)):
            for workers in (1, 2):
                run = _measure(STEP.format(tmp=tmp, corpus=jsonl[name], vocab=vocab, workers=workers), env)
                _report(f"{name} ({megabytes:.1f} MB), {workers} worker(s)", [run], megabytes)


if __name__ == "__main__":
    main()
