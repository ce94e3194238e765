"""A local S3 (SeaweedFS) and MLflow server pair on loopback, for the demo and the tests.

`stack_up(folder)` starts both (or finds them running), waits until they answer
from their own processes, and returns the environment a pipeline run needs;
`stack_down(folder)` stops every process each server started (see
pipelines/stack_servers.py and stack_processes.py: a tag in the environment and the process group, never a
name). The folder holds the servers' data, logs and a state file (mode 0600, it
holds the local stack's generated credentials), so a stack can be stopped and
started again with its data.
"""

from __future__ import annotations

import json
import logging
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.core.errors import BertpipeError
from pipelines.stack_processes import free_port
from pipelines.stack_servers import DEFAULT_BUCKET, MlflowServer, SeaweedFS, write_private

log = logging.getLogger(__name__)

MLFLOW_ARTIFACT_PREFIX = "mlflow"
STATE_FILE = "stack.json"


@dataclass
class Stack:
    """SeaweedFS + MLflow, started and stopped together; `env` is what a pipeline run needs."""

    s3: SeaweedFS
    mlflow: MlflowServer

    @classmethod
    def create(cls, directory: str | Path, bucket: str = DEFAULT_BUCKET, s3_port: int = 0, mlflow_port: int = 0) -> "Stack":
        directory = Path(directory).resolve()
        s3 = SeaweedFS(directory / "seaweedfs", access_key="bertpipe-" + secrets.token_hex(6),
                       secret_key=secrets.token_urlsafe(30), bucket=bucket, ports={"s3": s3_port} if s3_port else {})
        mlflow_port = mlflow_port or free_port(taken=s3.own_ports())
        mlflow_server = MlflowServer(directory / "mlflow", s3.env(), f"s3://{bucket}/{MLFLOW_ARTIFACT_PREFIX}", port=mlflow_port)
        return cls(s3, mlflow_server)

    @property
    def bucket(self) -> str:
        return self.s3.bucket

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri

    def env(self) -> dict[str, str]:
        return {**self.s3.env(), "MLFLOW_TRACKING_URI": self.tracking_uri}

    def start(self) -> None:
        self.s3.start()
        self.mlflow.start()

    def stop(self, kill: bool = False) -> None:
        self.mlflow.stop(kill=kill)
        self.s3.stop(kill=kill)

    def status(self) -> dict:
        return {"s3": {"endpoint": self.s3.endpoint, "bucket": self.bucket, **self.s3.status()},
                "mlflow": {"tracking_uri": self.tracking_uri, **self.mlflow.status()}}

    # -- state file, so `stack down` in another process finds the servers --------------------

    def save(self, directory: Path) -> None:
        state = {"bucket": self.bucket, "access_key": self.s3.access_key, "secret_key": self.s3.secret_key,
                 "s3_ports": self.s3.ports, "s3_pid": self.s3.pid, "mlflow_port": self.mlflow.port, "mlflow_pid": self.mlflow.pid}
        write_private(directory / STATE_FILE, json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "Stack":
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            raise BertpipeError(f"no local stack in {directory}: run `bertpipe stack up --dir {directory}`") from None
        s3 = SeaweedFS(directory / "seaweedfs", access_key=state["access_key"], secret_key=state["secret_key"],
                       bucket=state["bucket"], ports=state["s3_ports"], pid=state["s3_pid"])
        mlflow_server = MlflowServer(directory / "mlflow", s3.env(), f"s3://{state['bucket']}/{MLFLOW_ARTIFACT_PREFIX}",
                                     port=state["mlflow_port"], pid=state["mlflow_pid"])
        return cls(s3, mlflow_server)


def stack_up(directory: str | Path, bucket: str = DEFAULT_BUCKET, s3_port: int = 0, mlflow_port: int = 0) -> Stack:
    """Start the local stack in directory (or restart it with its data) and return it once both servers answer."""
    directory = Path(directory).resolve()
    _check_writable(directory)
    stack = Stack.load(directory) if (directory / STATE_FILE).exists() else Stack.create(directory, bucket, s3_port, mlflow_port)
    try:
        stack.start()
    finally:
        stack.save(directory)
    return stack


def _check_writable(directory: Path) -> None:
    """Refuse a folder that cannot hold the servers' data before anything starts."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        raise BertpipeError(f"cannot use {directory} for the local stack ({error.strerror or error}): pass a writable --dir") from None


def stack_down(directory: str | Path) -> Stack:
    """Stop the local stack recorded in directory (its data stays for the next `up`)."""
    directory = Path(directory).resolve()
    stack = Stack.load(directory)
    stack.stop()
    stack.save(directory)
    return stack


def stack_status(directory: str | Path) -> dict:
    return Stack.load(Path(directory).resolve()).status()


def export_lines(env: dict[str, str]) -> str:
    """Shell `export` lines for env (for `eval "$(bertpipe stack up)"`)."""
    import shlex

    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items()))


def stack_command(action: str, directory: str | Path, bucket: str = DEFAULT_BUCKET) -> str:
    """What `bertpipe stack up|down|status --dir D` prints: exports for eval after up, JSON status otherwise."""
    if action == "up":
        stack = stack_up(directory, bucket=bucket)
        log.info("S3 at %s (bucket %s), MLflow at %s; data in %s", stack.s3.endpoint, stack.bucket, stack.tracking_uri, directory)
        return export_lines(stack.env())
    if action == "down":
        stack_down(directory)
        return json.dumps(stack_status(directory), indent=2)
    if action == "status":
        return json.dumps(stack_status(directory), indent=2)
    raise BertpipeError(f"unknown stack action {action!r}: use up, down or status")
