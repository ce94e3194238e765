"""`run`, `submit` and `schedule` check every pipeline argument by the rules of the step setting it feeds, at once."""

import inspect

import pytest

from pipelines.bert_pretraining import bert_pretraining
from pipelines.cli import main
from pipelines.pipeline_parameters import argument_problems, source_of

# Inputs and locations, not step settings: checked where they are used (pipelines.locations, the corpus reader,
# step_io.check_run_exists for the run to resume).
INPUTS = {"artifact_root", "tracking_uri", "corpus", "vocab_source", "experiment", "registered_model_name", "probe_dataset", "resume_run_id"}


def test_every_pipeline_parameter_feeds_a_step_setting_of_its_type():
    for name, parameter in inspect.signature(bert_pretraining.pipeline_func).parameters.items():
        source = source_of(name)
        if name in INPUTS:
            continue
        assert source is not None, f"{name} feeds no step setting"
        cls, field = source
        assert inspect.signature(cls).parameters[field].annotation in (parameter.annotation, parameter.annotation.__name__), name


def test_bad_values_are_named_as_the_pipeline_names_them():
    assert argument_problems({"phase1_steps": -5, "phase2_learning_rate": 0.0, "model_size": "huge", "masked_lm_prob": 1.5, "data_seed": 12}) == [
        "phase1_steps=-5: must be at least 1",
        "phase2_learning_rate=0.0: must be greater than 0",
        "model_size='huge': must be one of tiny, mini, small, base, large",
        "masked_lm_prob=1.5: must be less than 1",
    ]


def test_run_refuses_every_bad_value_before_any_step_starts(tmp_path, capsys):
    artifacts = tmp_path / "artifacts"
    code = main(["run", "--artifact-root", str(artifacts), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                 "--phase1-steps", "-5", "--model-size", "huge", "--masked-lm-prob", "1.5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "phase1_steps=-5: must be at least 1" in err and "model_size='huge'" in err and "masked_lm_prob=1.5" in err
    assert len(err.strip().splitlines()) == 1
    assert not artifacts.exists()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "p.yaml"
    assert main(["compile", "--output", str(path)]) == 0
    return path


def test_submit_refuses_bad_values_before_connecting(package, capsys):
    code = main(["submit", "--host", "http://127.0.0.1:9", "--package", str(package), "--run-name", "r",
                 "--param", "artifact_root=s3://b/p", "--param", "tracking_uri=http://mlflow:5000",
                 "--param", "phase1_steps=-5", "--param", "masked_lm_prob=1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "phase1_steps=-5: must be at least 1; masked_lm_prob=1.5: must be less than 1" in err


def test_run_warns_of_a_warmup_longer_than_its_phase_on_the_terminal_and_checks_the_artifact_root_first(tmp_path, capsys):
    in_the_way = tmp_path / "artifacts"
    in_the_way.write_text("not a folder\n")
    code = main(["run", "--artifact-root", str(in_the_way), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                 "--phase1-steps", "4", "--phase1-warmup-steps", "10", "--phase2-steps", "20", "--phase2-warmup-steps", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert [line.split(" ", 1)[1] for line in err[:-1]] == [
        "WARNING pipelines.pipeline_parameters: bertpipe run: phase 1: warmup_steps=10 is more than max_steps=4: the learning rate never reaches its peak"]
    assert err[-1] == f"bertpipe: error: --artifact-root {in_the_way} is a file, not a folder: pass a folder (an existing one or one to create)"
    assert in_the_way.read_text() == "not a folder\n" and sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]


def test_argument_warnings_need_both_values_of_a_phase():
    from pipelines.pipeline_parameters import argument_warnings

    assert argument_warnings({"phase2_steps": 5, "phase2_warmup_steps": 6}) == [
        "phase 2: warmup_steps=6 is more than max_steps=5: the learning rate never reaches its peak"]
    assert argument_warnings({"phase1_steps": 5}) == []  # the compiled package's warmup may be anything
