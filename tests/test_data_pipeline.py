"""The data step through KFP: task inputs that do not grow with the corpus, and the same bytes as the CLI.

KFP hands a task its executor input (every parameter and input artifact, as JSON) as ONE
command-line argument, which Linux caps at 128 KiB; integers travel as JSON numbers.
"""

import gzip
import hashlib
import json
from pathlib import Path

import kfp.local
import pytest
from kfp import dsl
from kfp.local import executor_input_utils

from components.core.corpus import demo_corpus_path
from components.core.recipe import PHASES
from components.core.settings import problems
from components.data.settings import MAX_SEED, DataSettings
from components.data.split import plan_pretraining_data
from pipelines.bert_pretraining import bert_pretraining, pretraining_data
from pipelines.cli import main
from tests.test_kfp_local import run_alone

ARGUMENT_LIMIT = 32 * 1024  # a quarter of Linux's MAX_ARG_STRLEN


def executor_input_size(component: str, arguments: dict) -> int:
    """Bytes of the executor input KFP builds for a task of `component` (the compiled pipeline's spec) with `arguments`."""
    spec = bert_pretraining.pipeline_spec.components[component]
    executor_input = executor_input_utils.construct_executor_input(spec, arguments, task_root="/tmp/task", block_input_artifact=False)
    return len(json.dumps(executor_input_utils.executor_input_to_dict(executor_input, spec)).encode())


def test_no_task_input_grows_with_a_2000_shard_plan(tmp_path, demo_vocab):
    corpus = tmp_path / "many.txt"
    corpus.write_text("".join(f"Document {i} starts here.\nIt ends here, {i}.\n\n" for i in range(2100)), encoding="utf-8")
    settings = DataSettings(shard_size_mb=1e-6)  # one document per shard
    names = plan_pretraining_data(str(corpus), demo_vocab, str(tmp_path / "data"), settings)
    assert len(names) == 2100 and sum(name.startswith("train-") for name in names) >= 2000
    # The loop's work items: a shard name each, whatever the shard holds.
    assert len(json.dumps(names)) / len(names) < 16

    root = "s3://bertpipe-artifacts/team/bert-pretraining"
    folder = f"{root}/cache/data-512-0123456789abcdef0123"
    where = dict(data_folder=dsl.Artifact(name="data_folder", uri="s3://bertpipe-artifacts/kfp/plan/data_folder", metadata={"uri": folder}))
    vocab = dsl.Artifact(name="vocab", uri="s3://bertpipe-artifacts/kfp/vocab", metadata={"uri": f"{root}/cache/vocab-x", "size": 30522, "sha256": "0" * 64})
    fields = {name: getattr(settings, name) for name in DataSettings.__dataclass_fields__}
    sizes = {
        "plan": executor_input_size("comp-plan-pretraining-data", {**fields, "artifact_root": root, "fingerprint": "f" * 20,
                                                                   "corpus": "s3://corpora/wikipedia/en/*.txt.gz", "vocab": vocab}),
        "merge": executor_input_size("comp-create-pretraining-data", {**where, "tracking_uri": "http://mlflow.mlflow.svc:5000", "experiment": "bert-pretraining"}),
        **{f"shard {name}": executor_input_size("comp-create-pretraining-shard", {**where, "shard": name}) for name in (names[0], names[-1])},
    }
    assert max(sizes.values()) < ARGUMENT_LIMIT, sizes


def test_seeds_that_kfp_cannot_carry_exactly_are_refused():
    assert problems(DataSettings(seed=MAX_SEED)) == []
    assert problems(DataSettings(seed=MAX_SEED + 1)) == [f"seed={MAX_SEED + 1}: must be at most {MAX_SEED:g}"]


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # 100 kfp.local tasks: about 5 minutes of 2 cores
def test_pipeline_data_equals_the_clis_byte_for_byte(tmp_path, demo_vocab):
    """Both lengths, 40+ shards each, through the data sub-pipeline under kfp.local and through `bertpipe create-pretraining-data`."""
    corpus = tmp_path / "demo.txt"
    corpus.write_text(gzip.open(demo_corpus_path(), "rt", encoding="utf-8").read(), encoding="utf-8")
    settings = dict(dupe_factor=1, dev_fraction=0.05, test_fraction=0.05, seed=20261201, shard_size_mb=0.02, per_word_replacement=True)
    tracking = dict(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="data-pipeline")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"))
    for phase in PHASES:
        length = phase.max_seq_length
        run_alone(pretraining_data, {"vocab": (dsl.Artifact, demo_vocab)}, corpus=str(corpus), artifact_root=str(tmp_path / "artifacts"),
                  fingerprint="", max_seq_length=length, max_predictions_per_seq=phase.max_predictions_per_seq, **settings, **tracking)
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items() if name != "per_word_replacement"]
        cli_out = tmp_path / f"cli-{length}"
        assert main(["create-pretraining-data", "--corpus", str(corpus), "--vocab-uri", demo_vocab, "--output-uri", str(cli_out),
                     f"--max-seq-length={length}", f"--max-predictions-per-seq={phase.max_predictions_per_seq}", "--per-word-replacement",
                     *flags, "--tracking-uri", tracking["tracking_uri"], "--experiment", tracking["experiment"]]) == 0
        (pipeline_out,) = (tmp_path / "artifacts" / "cache").glob(f"data-{length}-*")
        manifest = json.loads((pipeline_out / "manifest.json").read_text())
        assert len(manifest["splits"]["train"]["shards"]) >= 40 and manifest["settings"]["seed"] == 20261201
        assert _digests(pipeline_out) == _digests(cli_out)
