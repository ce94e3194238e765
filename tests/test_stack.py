"""The local stack: `up` starts SeaweedFS and MLflow and returns their environment, `down` stops them, data survives."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request

import pytest

from components.core.errors import BertpipeError
from pipelines.stack import STATE_FILE, export_lines, stack_down, stack_status, stack_up
from pipelines.stack_servers import MlflowServer


def test_stack_up_status_down_and_up_again_keeps_data(tmp_path):
    folder = tmp_path / "stack"
    stack = stack_up(folder)
    try:
        env = stack.env()
        assert sorted(env) == ["AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_SECRET_ACCESS_KEY",
                               "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"]
        status = stack_status(folder)
        assert status["s3"]["running"] and status["mlflow"]["running"] and status["s3"]["bucket"] == "bertpipe"
        assert (folder / STATE_FILE).stat().st_mode & 0o077 == 0
        stack.s3.client().put_object(Bucket="bertpipe", Key="kept.txt", Body=b"kept")
        with urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=5) as response:
            assert response.read() == b"OK"

        assert stack_up(folder).s3.pid == stack.s3.pid  # already running: found, not started twice
        stack_down(folder)
        status = stack_status(folder)
        assert not status["s3"]["running"] and not status["mlflow"]["running"]
        with pytest.raises(OSError):
            urllib.request.urlopen(env["MLFLOW_TRACKING_URI"] + "/health", timeout=2)

        again = stack_up(folder)
        assert again.env() == env  # same ports and credentials
        assert again.s3.client().get_object(Bucket="bertpipe", Key="kept.txt")["Body"].read() == b"kept"
    finally:
        stack_down(folder)


class _KernelHandingOutPortsTwice:
    """A socket whose bind to port 0 gets each port of a short list twice in a row, as a kernel may after a release."""

    handed = iter(port for port in range(41000, 41100) for _ in range(2))

    def __init__(self, *args):
        self.port = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def bind(self, address):
        self.port = address[1] or next(self.handed)

    def getsockname(self):
        return ("127.0.0.1", self.port)


def test_a_new_stack_never_gives_two_servers_the_same_port(tmp_path, monkeypatch):
    """CI once saw MLflow refuse its port because SeaweedFS listened there: every port the stack picks is its own."""
    from pipelines import stack_processes
    from pipelines.stack import Stack

    monkeypatch.setattr(stack_processes.socket, "socket", _KernelHandingOutPortsTwice)
    stack = Stack.create(tmp_path / "stack", s3_port=41003)
    ports = [*stack.s3.own_ports(), stack.mlflow.port]
    assert len(ports) == 11 and len(set(ports)) == 11 and stack.s3.ports["s3"] == 41003


def test_export_lines_are_shell_safe():
    lines = export_lines({"B": "it's $HOME", "A": "plain"})
    assert lines == "export A=plain\nexport B='it'\"'\"'s $HOME'"
    shell = subprocess.run(["bash", "-c", lines + '\nprintf %s "$B"'], capture_output=True, text=True, check=True, env={})
    assert shell.stdout == "it's $HOME"


def test_status_of_a_folder_without_a_stack_says_what_to_run(tmp_path):
    with pytest.raises(BertpipeError, match=r"no local stack in .*: run `bertpipe stack up --dir"):
        stack_status(tmp_path)


def test_stack_command_refuses_unknown_actions(tmp_path):
    from pipelines.stack import stack_command

    with pytest.raises(BertpipeError, match="unknown stack action 'restart': use up, down or status"):
        stack_command("restart", tmp_path)


def _health_answering_server():
    """A stranger on a loopback port that answers MLflow's /health like a real server would."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_killed_mlflow_parent_leaves_no_worker_serving_behind(tmp_path):
    """Killing `mlflow server` alone leaves its uvicorn worker serving: status says so, up and down clean it up."""
    folder = tmp_path / "stack"
    stack = stack_up(folder)
    try:
        parent = stack.mlflow.pid
        workers = [pid for pid in stack.mlflow.processes() if pid != parent]
        assert workers, "mlflow server runs its worker as a child process"
        os.kill(parent, signal.SIGKILL)
        os.waitpid(parent, 0)
        assert stack.mlflow.answers()  # the orphaned worker still serves the port

        status = stack_status(folder)["mlflow"]
        assert not status["running"] and status["processes"] == workers
        assert status["state"].startswith(f"broken: its main process {parent} is gone")

        again = stack_up(folder)  # stops the orphan, starts a server of its own on the same port
        assert again.mlflow.pid != parent and again.tracking_uri == stack.tracking_uri
        assert not set(workers) & set(again.mlflow.processes())
        assert stack_status(folder)["mlflow"]["running"]

        os.kill(again.mlflow.pid, signal.SIGKILL)  # orphaned once more: `down` alone stops the worker too
        os.waitpid(again.mlflow.pid, 0)
        assert again.mlflow.answers()
    finally:
        stack_down(folder)
    status = stack_status(folder)
    assert status["mlflow"]["processes"] == [] and status["s3"]["processes"] == []
    assert status["mlflow"]["state"] == "stopped" and status["s3"]["state"] == "stopped"
    assert not stack.mlflow.answers()


def test_mlflow_refuses_a_port_that_another_server_answers(tmp_path):
    stranger = _health_answering_server()
    try:
        port = stranger.server_address[1]
        server = MlflowServer(tmp_path / "mlflow", {}, str(tmp_path / "artifacts"), port=port)
        assert server.answers()  # the health check alone would take the stranger for the server
        assert server.status()["state"] == f"stopped, and port {port} is taken by pid {os.getpid()} ({_cmdline()})"
        with pytest.raises(BertpipeError, match=rf"MLflow server cannot start: port {port} is taken by pid {os.getpid()} "):
            server.start()
        assert server.pid is None and not (tmp_path / "mlflow" / "mlflow-server.log").exists()  # nothing was started
    finally:
        stranger.shutdown()
        stranger.server_close()


def _cmdline() -> str:
    return open(f"/proc/{os.getpid()}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()[:120]


@pytest.mark.parametrize("where", ["under-a-file", "/proc/bertpipe-stack"])
def test_stack_up_in_an_unwritable_folder_is_one_line_error(tmp_path, capsys, where):
    from pipelines.cli import main

    (tmp_path / "file").write_text("not a folder")
    folder = str(tmp_path / "file" / "stack") if where == "under-a-file" else where
    assert main(["stack", "up", "--dir", folder]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"bertpipe: error: cannot use {folder} for the local stack (") and error.count("\n") == 1
    assert error.rstrip().endswith("pass a writable --dir")
