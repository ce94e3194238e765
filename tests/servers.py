"""Pytest fixtures that run a real S3 (SeaweedFS) and MLflow server on free loopback ports.

Load with `pytest_plugins = ["tests.servers"]`. `servers` starts both once per
session; `servers_env` (per test) points the standard AWS / MLflow variables at
them with short timeouts, so a dead server fails a test in seconds, and brings
back any server an earlier fault test stopped. `fresh_s3` gives a fault test its
own SeaweedFS to kill without disturbing the others.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

from pipelines.stack import Stack
from pipelines.stack_servers import SeaweedFS

# A recognisable fake secret: tests search logs and files for it.
FAKE_SECRET_PREFIX = "bertpipe-FAKE-SECRET-"

# Short limits so a stopped or hanging server fails a test in seconds.
FAST_FAILURE_ENV = {
    "BERTPIPE_S3_CONNECT_TIMEOUT": "2",
    "BERTPIPE_S3_READ_TIMEOUT": "5",
    "BERTPIPE_S3_MAX_ATTEMPTS": "2",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


@dataclass
class Servers:
    """Handles on the running servers: their client environment and stop/start for fault injection."""

    stack: Stack

    @property
    def env(self) -> dict[str, str]:
        """AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, MLFLOW_S3_ENDPOINT_URL, MLFLOW_TRACKING_URI."""
        return self.stack.env()

    @property
    def bucket(self) -> str:
        return self.stack.bucket

    @property
    def tracking_uri(self) -> str:
        return self.stack.tracking_uri

    @property
    def secret(self) -> str:
        return self.stack.s3.secret_key

    def stop_s3(self, kill: bool = True) -> None:
        self.stack.s3.stop(kill=kill)

    def start_s3(self) -> None:
        self.stack.s3.start()

    def stop_mlflow(self, kill: bool = True) -> None:
        self.stack.mlflow.stop(kill=kill)

    def start_mlflow(self) -> None:
        self.stack.mlflow.start()

    def ensure_running(self) -> None:
        self.stack.start()


def _fake_credentials() -> tuple[str, str]:
    return "bertpipe-test-" + secrets.token_hex(4), FAKE_SECRET_PREFIX + secrets.token_hex(12)


def _point_clients_at(env: dict[str, str], monkeypatch) -> None:
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**env, **FAST_FAILURE_ENV}.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """SeaweedFS + MLflow for the whole session (stopped by PID at the end)."""
    stack = Stack.create(tmp_path_factory.mktemp("stack"))
    stack.s3.access_key, stack.s3.secret_key = _fake_credentials()
    stack.mlflow.s3_env = stack.s3.env()
    try:
        stack.start()
        yield Servers(stack)
    finally:
        stack.stop()


@pytest.fixture
def servers_env(servers, monkeypatch):
    """The session servers (restarted if a fault test stopped one), with the client environment set."""
    servers.ensure_running()
    _point_clients_at(servers.env, monkeypatch)
    return servers


@pytest.fixture
def fresh_s3(tmp_path, monkeypatch):
    """A SeaweedFS of this test's own (for tests that kill it), with the client environment set."""
    access_key, secret_key = _fake_credentials()
    server = SeaweedFS(tmp_path / "seaweedfs", access_key=access_key, secret_key=secret_key)
    try:
        server.start()
        _point_clients_at(server.env(), monkeypatch)
        yield server
    finally:
        server.stop(kill=True)
