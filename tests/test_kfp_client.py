"""Submission and schedules against a local stand-in for the KFP v2beta1 REST API.

No KFP server runs here, so a small http.server plays one: it records every request,
checks each body strictly against the v2beta1 models shipped in kfp-server-api (no
unknown fields, right types, enum values) and against the rules the real server applies,
and answers with bodies kfp.Client can parse.
"""

import datetime
import json
import re
import threading
import uuid
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import kfp_server_api
import pytest
import yaml
from kfp import compiler, dsl

from components.core.errors import BertpipeError
from pipelines import kfp_client
from pipelines.kfp_client import Endpoint
from pipelines.kubernetes import ClusterSettings, apply_cpu_step_settings
from tests.json_http import JsonHandler

PRIMITIVES = {"str": str, "int": int, "bool": bool, "object": object, "datetime": str}


def check_model(data, type_name: str, path: str = "$") -> None:
    """Fail if `data` is not a valid JSON form of kfp_server_api model `type_name`."""
    if type_name.startswith("list["):
        assert isinstance(data, list), f"{path}: expected a list"
        for i, item in enumerate(data):
            check_model(item, type_name[5:-1], f"{path}[{i}]")
    elif type_name.startswith("dict("):
        assert isinstance(data, dict), f"{path}: expected an object"
        value_type = type_name[type_name.index(",") + 1:-1].strip()
        for key, value in data.items():
            check_model(value, value_type, f"{path}.{key}")
    elif type_name in PRIMITIVES:
        if type_name == "str":  # int64 fields are strings in the models; JSON may carry numbers
            assert isinstance(data, (str, int)) and not isinstance(data, bool), f"{path}: expected a string"
        else:
            assert isinstance(data, PRIMITIVES[type_name]), f"{path}: expected {type_name}"
    else:
        model = getattr(kfp_server_api, type_name)
        if getattr(model, "allowable_values", None):
            assert data in model.allowable_values, f"{path}: {data!r} not in {model.allowable_values}"
            return
        assert isinstance(data, dict), f"{path}: expected a {type_name} object"
        by_json_name = {json_name: attr for attr, json_name in model.attribute_map.items()}
        unknown = set(data) - set(by_json_name)
        assert not unknown, f"{path}: fields {sorted(unknown)} are not in {type_name}"
        for key, value in data.items():
            if value is not None:
                check_model(value, model.openapi_types[by_json_name[key]], f"{path}.{key}")


def checked(answer: dict, type_name: str) -> dict:
    """Answers are held to the models too, so the stand-in cannot drift from the API."""
    check_model(answer, type_name)
    return answer


SIX_FIELD_CRON = re.compile(r"^\S+( \S+){5}$")


class FakeKfp(ThreadingHTTPServer):
    """State and request log of the stand-in server."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeKfpHandler)
        self.requests: list[tuple[str, str, dict | None, dict]] = []  # method, path, body, headers
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeKfpHandler(JsonHandler):
    server: FakeKfp



    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((method, url.path, body, dict(self.headers)))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            status, answer = self.route(method, url.path, query, body)
        except AssertionError as error:  # what the real server would refuse
            status, answer = 400, {"code": 3, "message": str(error)}
        self._reply(status, answer)

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731

    def route(self, method, path, query, body):
        state = self.server
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        prefix = "/apis/v2beta1/"
        assert path.startswith(prefix), f"unknown API path {path}"
        resource = path[len(prefix):]
        if method == "GET" and resource == "healthz":
            return 200, {"multi_user": False}
        if resource == "experiments" and method == "GET":
            predicate = json.loads(query["filter"])["predicates"][0] if "filter" in query else {}
            wanted = predicate.get("string_value", predicate.get("stringValue"))  # protojson takes both
            found = [e for e in state.experiments.values() if wanted in (None, e["display_name"])]
            return 200, checked({"experiments": found, "total_size": len(found)}, "V2beta1ListExperimentsResponse")
        if resource == "experiments" and method == "POST":
            check_model(body, "V2beta1Experiment")
            assert body.get("display_name"), "experiment display_name is required"
            experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": now}
            state.experiments[experiment["experiment_id"]] = experiment
            return 200, checked(experiment, "V2beta1Experiment")
        if resource == "runs" and method == "POST":
            check_model(body, "V2beta1Run")
            assert body.get("display_name"), "run display_name is required"
            assert bool(body.get("pipeline_spec")) != bool(body.get("pipeline_version_reference")), \
                "exactly one of pipeline_spec and pipeline_version_reference"
            assert body.get("experiment_id") in state.experiments, "unknown experiment"
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": now}
            state.runs[run["run_id"]] = run
            return 200, checked(run, "V2beta1Run")
        if resource == "recurringruns" and method == "POST":
            check_model(body, "V2beta1RecurringRun")
            assert body.get("display_name"), "recurring run display_name is required"
            assert body.get("pipeline_spec"), "pipeline_spec is required"
            assert body.get("experiment_id") in state.experiments, "unknown experiment"
            assert body.get("mode") in ("ENABLE", "DISABLE"), "mode must be ENABLE or DISABLE"
            assert 1 <= int(body.get("max_concurrency", 0)) <= 10, "max_concurrency must be 1..10"
            cron = body["trigger"]["cron_schedule"]["cron"]
            assert SIX_FIELD_CRON.match(cron), f"cron {cron!r} is not 6 fields"
            assert "periodic_schedule" not in body["trigger"], "one trigger only"
            recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "created_at": now, "status": "ENABLED"}
            state.recurring_runs[recurring["recurring_run_id"]] = recurring
            return 200, checked(recurring, "V2beta1RecurringRun")
        if resource == "recurringruns" and method == "GET":
            ordered = sorted(state.recurring_runs.values(), key=lambda r: r["created_at"])
            start, size = int(query.get("page_token") or 0), int(query["page_size"])
            page = ordered[start:start + size]
            token = str(start + size) if start + size < len(ordered) else ""
            answer = {"recurringRuns": page, "total_size": len(ordered), "next_page_token": token}
            return 200, checked(answer, "V2beta1ListRecurringRunsResponse")
        match = re.fullmatch(r"recurringruns/([^/:]+)(:enable|:disable)?", resource)
        if match:
            recurring = state.recurring_runs.get(match.group(1))
            if recurring is None:
                return 404, {"code": 5, "message": f"recurring run {match.group(1)} not found"}
            if method == "POST" and match.group(2):
                recurring["mode"] = "ENABLE" if match.group(2) == ":enable" else "DISABLE"
                return 200, {}
            if method == "DELETE":
                del state.recurring_runs[match.group(1)]
                return 200, {}
        return 404, {"code": 5, "message": f"no route {method} {path}"}


@pytest.fixture
def fake_kfp():
    server = FakeKfp()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def echo(text: str) -> str:
    return text


SETTINGS = ClusterSettings(cpu_image="registry.example.com/bertpipe-cpu:1", gpu_image="registry.example.com/bertpipe-cuda:1")


@dsl.pipeline(name="echo-pipeline")
def echo_pipeline(text: str = "hi", repeat: int = 1):
    apply_cpu_step_settings(echo(text=text), SETTINGS, kind="evaluation")


@pytest.fixture
def package(tmp_path):
    path = tmp_path / "echo.yaml"
    compiler.Compiler().compile(echo_pipeline, str(path))
    return path


@pytest.fixture
def client(fake_kfp, monkeypatch):
    monkeypatch.setenv(kfp_client.TOKEN_ENV, "tok-123-secret")
    monkeypatch.delenv(kfp_client.COOKIE_ENV, raising=False)
    return kfp_client.connect(Endpoint(host=fake_kfp.url))


def test_submit_creates_experiment_then_run_with_token(fake_kfp, client, package):
    run = kfp_client.submit(client, package, {"text": "bonjour", "repeat": 3}, run_name="bert nightly",
                            experiment="bert")
    methods_paths = [(m, p) for m, p, _, _ in fake_kfp.requests]
    assert methods_paths == [
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    assert all(h.get("authorization") == "Bearer tok-123-secret" for _, _, _, h in fake_kfp.requests)
    body = fake_kfp.requests[-1][2]
    assert body["display_name"] == "bert nightly"
    assert body["runtime_config"]["parameters"] == {"text": "bonjour", "repeat": 3}
    # The compiled pipeline and its Kubernetes platform spec travel unchanged: per-task
    # caching is not overridden run-wide, and secrets are still referenced by name only.
    pipeline_spec, platform_spec = yaml.safe_load_all(package.read_text())
    assert body["pipeline_spec"] == {"pipeline_spec": pipeline_spec, "platform_spec": platform_spec}
    assert body["pipeline_spec"]["pipeline_spec"]["root"]["dag"]["tasks"]["echo"]["cachingOptions"] == {}
    executor = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-echo"]
    assert [s["secretName"] for s in executor["secretAsEnv"]] == ["bertpipe-s3", "bertpipe-mlflow"]
    assert run.run_id in fake_kfp.runs and run.url.endswith(f"/#/runs/details/{run.run_id}")
    assert fake_kfp.experiments[run.experiment_id]["display_name"] == "bert"

    kfp_client.submit(client, package, {}, run_name="again", experiment="bert")
    assert len(fake_kfp.experiments) == 1, "the experiment is reused by name"


def test_schedule_lifecycle(fake_kfp, client, package):
    weekly = kfp_client.create_schedule(client, package, {"text": "w"}, name="weekly", cron="0 0 3 * * 0")
    nightly = kfp_client.create_schedule(client, package, {}, name="nightly", cron="0 30 1 * * MON-FRI",
                                         max_concurrency=2, catchup=True)
    body = [b for m, p, b, _ in fake_kfp.requests if (m, p) == ("POST", "/apis/v2beta1/recurringruns")][0]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 0"}}
    assert body["mode"] == "ENABLE" and body["no_catchup"] is True and body["max_concurrency"] == 1
    assert weekly == kfp_client.Schedule(weekly.recurring_run_id, "weekly", "0 0 3 * * 0", True, body["experiment_id"])

    listed = kfp_client.list_schedules(client, page_size=1)  # pages through both
    assert [(s.name, s.cron, s.enabled) for s in listed] == [("weekly", "0 0 3 * * 0", True),
                                                            ("nightly", "0 30 1 * * MON-FRI", True)]
    kfp_client.pause_schedule(client, "weekly")
    assert fake_kfp.recurring_runs[weekly.recurring_run_id]["mode"] == "DISABLE"
    kfp_client.resume_schedule(client, weekly.recurring_run_id)
    assert fake_kfp.recurring_runs[weekly.recurring_run_id]["mode"] == "ENABLE"
    kfp_client.delete_schedule(client, "nightly")
    assert list(fake_kfp.recurring_runs) == [weekly.recurring_run_id]
    assert nightly.recurring_run_id not in fake_kfp.recurring_runs
    with pytest.raises(BertpipeError, match="no schedule named or with id 'nightly'"):
        kfp_client.pause_schedule(client, "nightly")


def test_duplicate_schedule_names_need_an_id(fake_kfp, client, package):
    first = kfp_client.create_schedule(client, package, {}, name="dup", cron="0 0 0 * * *")
    kfp_client.create_schedule(client, package, {}, name="dup", cron="0 0 0 * * ?")
    with pytest.raises(BertpipeError, match="2 schedules are named 'dup'"):
        kfp_client.delete_schedule(client, "dup")
    kfp_client.delete_schedule(client, first.recurring_run_id)
    assert len(fake_kfp.recurring_runs) == 1


def test_bad_cron_is_refused_before_sending(fake_kfp, client, package):
    before = len(fake_kfp.requests)
    with pytest.raises(BertpipeError, match=r"5 fields; KFP wants 6 with seconds first, e.g. '0 0 3 \* \* 0'"):
        kfp_client.create_schedule(client, package, {}, name="x", cron="0 3 * * 0")
    assert len(fake_kfp.requests) == before


@pytest.mark.parametrize("cron", [
    "0 0 3 * * 0", "*/30 * * * * *", "0 0 9 ? * 2-6", "0 15 10 1,15 JAN-MAR ?", "0 0 */6 * * *",
    "  0  0 3 * * SUN ",
])
def test_valid_cron(cron):
    assert kfp_client.validate_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize("cron, message", [
    ("0 0 24 * * *", "hour 24 is out of range 0-23"),
    ("0 60 * * * *", "minute 60 is out of range"),
    ("0 0 0 0 * *", "day of month 0 is out of range 1-31"),
    ("0 0 0 * 13 *", "month 13 is out of range 1-12"),
    ("0 0 0 * * 7", "day of week 7 is out of range 0-6"),
    ("? 0 0 * * *", "only allowed for day of month"),
    ("0 */0 * * * *", "step '0' must be a positive number"),
    ("0 0 5-1 * * *", "runs backwards"),
    ("0 0 0 * FOO *", "not a number or a name"),
    ("0 0 3 * * 0 2027", "has 7 fields"),
    ("@weekly", "has 1 fields"),
])
def test_invalid_cron(cron, message):
    with pytest.raises(BertpipeError, match=re.escape(message)):
        kfp_client.validate_cron(cron)


def test_server_refusal_and_missing_package_are_user_errors(fake_kfp, client, package, tmp_path):
    with pytest.raises(BertpipeError, match="max-concurrency must be between 1 and 10"):
        kfp_client.create_schedule(client, package, {}, name="x", cron="0 0 0 * * *", max_concurrency=11)
    with pytest.raises(BertpipeError, match="run `bertpipe compile` first"):
        kfp_client.submit(client, tmp_path / "missing.yaml", {}, run_name="x")
    assert not any(m == "POST" for m, _, _, _ in fake_kfp.requests)


def test_unreachable_endpoint_is_one_clear_error(monkeypatch):
    monkeypatch.delenv(kfp_client.TOKEN_ENV, raising=False)
    server = FakeKfp()  # bound, then closed: nothing listens on this port any more
    url = server.url
    server.server_close()
    with pytest.raises(BertpipeError, match=f"cannot reach KFP at {re.escape(url)}.*check --host"):
        kfp_client.connect(Endpoint(host=url))


def test_http_errors_carry_the_server_message(fake_kfp, client):
    with pytest.raises(BertpipeError, match="answered 404 .*recurring run nope not found"):
        with kfp_client.api_errors("pausing", fake_kfp.url):
            client.disable_recurring_run("nope")


def test_token_never_appears_in_requests_bodies_or_package(fake_kfp, client, package):
    kfp_client.submit(client, package, {"text": "x"}, run_name="r")
    assert "tok-123-secret" not in json.dumps([body for _, _, body, _ in fake_kfp.requests])
    assert "tok-123-secret" not in package.read_text()


# --- the CLI on the real pipeline ----------------------------------------------------------


@pytest.fixture(scope="module")
def bert_package(tmp_path_factory):
    from pipelines.cli import main

    path = tmp_path_factory.mktemp("compiled") / "bert-pretraining.yaml"
    assert main(["compile", "--output", str(path)]) == 0
    return path


def test_cli_submit_types_the_parameters_by_the_pipeline_signature(fake_kfp, bert_package, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.setenv(kfp_client.TOKEN_ENV, "tok-123-secret")
    code = main(["submit", "--host", fake_kfp.url, "--package", str(bert_package), "--run-name", "nightly",
                 "--param", "artifact_root=s3://bucket/bert", "--param", "tracking_uri=http://mlflow:5000", "--param", "phase1_steps=50",
                 "--param", "phase1_learning_rate=2e-4", "--param", "do_whole_word_mask=false"])
    assert code == 0
    body = fake_kfp.requests[-1][2]
    assert body["runtime_config"]["parameters"] == {
        "artifact_root": "s3://bucket/bert", "tracking_uri": "http://mlflow:5000", "phase1_steps": 50, "phase1_learning_rate": 2e-4, "do_whole_word_mask": False,
    }
    run_id = next(iter(fake_kfp.runs))
    assert f"run {run_id}: {fake_kfp.url}/#/runs/details/{run_id}" in capsys.readouterr().out


def test_cli_schedule_create_list_pause(fake_kfp, bert_package, capsys):
    from pipelines.cli import main

    common = ["--host", fake_kfp.url]
    assert main(["schedule", *common, "--package", str(bert_package), "--name", "weekly", "--cron", "0 0 3 * * 0",
                 "--param", "artifact_root=s3://bucket/bert", "--param", "tracking_uri=http://mlflow:5000"]) == 0
    assert main(["schedule", "list", *common]) == 0
    assert main(["schedule", "pause", "weekly", *common]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "weekly" in line]
    assert lines[0].endswith("weekly  '0 0 3 * * 0'  enabled")
    assert lines[-1].endswith("weekly  '0 0 3 * * 0'  paused")
    assert len(lines) == 3


CLUSTER_LOCATIONS = ["--param", "artifact_root=s3://bucket/bert", "--param", "tracking_uri=http://mlflow:5000"]


@pytest.mark.parametrize("args, message", [
    (["--cron", "0 3 * * 0", *CLUSTER_LOCATIONS], "has 5 fields; KFP wants 6"),
    (["--cron", "0 0 3 * * 0", "--param", "no_such_parameter=1"], "no_such_parameter"),
    (["--cron", "0 0 3 * * 0"], "artifact_root is not set: pass --param artifact_root=s3://bucket/prefix"),
    (["--cron", "0 0 3 * * 0", "--param", "artifact_root=s3://b/p", "--param", "tracking_uri=sqlite:///mlflow.db"],
     "tracking_uri='sqlite:///mlflow.db' is a store inside each pod"),
    (["--cron", "0 0 3 * * 0", "--param", "artifact_root=/data/bert", "--param", "tracking_uri=http://mlflow:5000"],
     "artifact_root='/data/bert' is a local folder, private to each pod"),
])
def test_cli_schedule_refuses_bad_input_before_sending(fake_kfp, bert_package, capsys, args, message):
    from pipelines.cli import main

    before = len(fake_kfp.requests)
    assert main(["schedule", "--host", fake_kfp.url, "--package", str(bert_package), "--name", "bad", *args]) == 2
    assert message in capsys.readouterr().err
    assert not [r for r in fake_kfp.requests[before:] if r[0] == "POST"]


def test_cli_submit_refuses_laptop_locations_unless_told_the_pods_share_a_volume(fake_kfp, bert_package, capsys):
    from pipelines.cli import main

    base = ["submit", "--host", fake_kfp.url, "--package", str(bert_package), "--run-name", "r"]
    before = len(fake_kfp.requests)
    assert main([*base, "--param", "artifact_root=./art", "--param", "tracking_uri=sqlite:///mlflow.db"]) == 2
    err = capsys.readouterr().err
    assert "artifact_root='./art' is a local folder" in err and "tracking_uri='sqlite:///mlflow.db'" in err
    assert not [r for r in fake_kfp.requests[before:] if r[0] == "POST"]
    assert main([*base, "--param", "artifact_root=/mnt/nfs/bert", "--param", "tracking_uri=sqlite:////mnt/nfs/mlflow.db", "--allow-local-storage"]) == 0


@pytest.mark.parametrize("param, message", [
    ("phase1_steps=abc", "--param phase1_steps='abc': expected an integer"),
    ("phase1_learning_rate=fast", "expected a number"),
    ("do_whole_word_mask=maybe", "expected true or false"),
])
def test_cli_submit_refuses_mistyped_parameters_in_one_line(fake_kfp, bert_package, capsys, param, message):
    from pipelines.cli import main

    assert main(["submit", "--host", fake_kfp.url, "--package", str(bert_package), "--run-name", "r", *CLUSTER_LOCATIONS, "--param", param]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
