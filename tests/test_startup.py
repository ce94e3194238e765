"""Start-up stays lazy: the CLI builds its parser without the model libraries, and train-phase never waits for mlflow.

Each check runs in a fresh interpreter (sys.modules of this one is full) and reads what
was imported, and by which thread (an import hook records it), not how long it took.
"""

import json
import subprocess
import sys
import textwrap

import mlflow
import pytest

from tests.instance_factory import make_data

HEAVY = ("torch", "transformers", "mlflow", "kfp")


def imported_after(code: str) -> set[str]:
    """Which of HEAVY a fresh interpreter has imported after running `code`."""
    probe = code + f"\nimport sys, json; print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))"
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return set(json.loads(finished.stdout.strip().splitlines()[-1]))


def test_the_whole_parser_builds_without_torch_transformers_or_mlflow():
    assert imported_after("from pipelines.cli import build_parser; build_parser()") == {"kfp"}  # `run` and `compile` take the pipeline's signature


@pytest.mark.parametrize("argv", [["--help"], ["train-phase", "--help"], ["export-vocab", "--help"], ["register", "--help"]])
def test_a_step_command_and_help_import_none_of_them(argv):
    code = f"""
        import contextlib, io
        from pipelines.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
            main({argv!r})
        assert "usage: bertpipe" in out.getvalue()
    """
    assert imported_after(textwrap.dedent(code)) == set()


def test_train_phase_imports_mlflow_after_its_first_step_and_only_in_the_thread_that_opens_its_run(tmp_path, demo_vocab):
    """A background import still holds the GIL: begun with the step, it made the first step 2.5x longer."""
    data = make_data(str(tmp_path / "data"), demo_vocab, max_seq_length=64, shards={"train": [16], "dev": [8]})
    code = f"""
        import importlib.abc, importlib.machinery, json, sys, threading
        import components.training.trainer as trainer
        first_import, steps_done, first_step_modules = {{}}, [], set()

        class Recorder(importlib.abc.MetaPathFinder):  # the thread that runs mlflow's or kfp's package (a find_spec alone is no import)
            def find_spec(self, name, path=None, target=None):
                spec = importlib.machinery.PathFinder.find_spec(name, path) if name in ("mlflow", "kfp") else None
                if spec is not None:
                    execute = spec.loader.exec_module
                    spec.loader.exec_module = lambda module: (first_import.setdefault(name, [threading.current_thread().name, len(steps_done)]),
                                                              execute(module))
                return spec

        def counted(self, one_step=trainer.PhaseRun._one_step):
            values = one_step(self)
            if not steps_done:
                first_step_modules.update(sys.modules)
            steps_done.append(1)
            return values

        trainer.PhaseRun._one_step = counted
        sys.meta_path.insert(0, Recorder())
        from pipelines.cli import main
        code = main(["train-phase", "--data-uri", {data!r}, "--vocab-uri", {demo_vocab!r}, "--output-uri", {str(tmp_path / "out")!r},
                     "--max-seq-length", "64", "--max-steps", "2", "--logging-steps", "1", "--per-device-train-batch-size", "4",
                     "--tracking-uri", {f"sqlite:///{tmp_path}/mlflow.db"!r}, "--experiment", "startup"])
        heavy = sorted(first_step_modules & {{"mlflow", "sqlalchemy", "pandas", "scipy", "matplotlib", "transformers", "torch._dynamo", "kfp"}})
        print(json.dumps({{"code": code, "mlflow": first_import.get("mlflow"), "kfp": first_import.get("kfp"), "by_the_first_step": heavy}}))
    """
    finished = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads(finished.stdout.strip().splitlines()[-1]) == {"code": 0, "mlflow": ["mlflow-run", 1], "kfp": None, "by_the_first_step": []}
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run, = client.search_runs([client.get_experiment_by_name("startup").experiment_id])
    history = client.get_metric_history(run.info.run_id, "loss")
    assert (run.info.status, sorted(metric.step for metric in history)) == ("FINISHED", [1, 2])  # the first step's metrics still reach the run


def test_train_phase_trains_without_transformers_dynamo_or_pandas(tmp_path, demo_vocab):
    """The trained model is components.core.bert's, AdamW defers dynamo, shards are read without pandas: each would cost seconds."""
    data = make_data(str(tmp_path / "data"), demo_vocab, max_seq_length=64, shards={"train": [16], "dev": [8]})
    code = f"""
        import contextlib, io
        from pipelines.cli import main
        code = main(["train-phase", "--data-uri", {data!r}, "--vocab-uri", {demo_vocab!r}, "--output-uri", {str(tmp_path / "out")!r},
                     "--max-seq-length", "64", "--max-steps", "2", "--logging-steps", "1", "--save-steps", "1",
                     "--per-device-train-batch-size", "4", "--tracking-uri", ""])
        assert code == 0
    """
    probe = textwrap.dedent(code) + "\nimport sys, json; print(json.dumps(sorted(set(sys.modules) & {'transformers', 'torch._dynamo', 'pandas', 'mlflow', 'kfp'})))"
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads(finished.stdout.strip().splitlines()[-1]) == []
