"""Server processes of the local stack, tracked as a group and found again from another process.

A server is started in its own session with a tag in its environment
(BERTPIPE_STACK_PROCESS=<its folder>), which every process it starts inherits:
MLflow's `mlflow server` runs its uvicorn worker as a child, and a worker whose
parent was killed keeps serving. So "is it running" asks for every process with
the tag (its leader or not), and stopping signals the group and each tagged
process until none is left. Nothing is found or stopped by name.

Linux only, like the servers' wheels: it reads /proc.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from components.core.errors import BertpipeError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TAG = "BERTPIPE_STACK_PROCESS"


def free_port(offset: int = 0, taken=()) -> int:
    """A loopback port nobody listens on and not in taken (and, with offset, port + offset free as well).

    The kernel may hand out a just-released port again, so ports picked for one stack
    are passed as taken: two of its servers must never be given the same port.
    """
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        if port in taken or (offset and port + offset in taken):
            continue
        if not offset:
            return port
        if port + offset < 65536 and can_bind(port + offset) and can_bind(port):
            return port
    raise BertpipeError("no free loopback port found")


def can_bind(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
            return True
        except OSError:
            return False


def spawn(command: list[str], env: dict[str, str], log_path: Path, tag: str) -> subprocess.Popen:
    """Start command in its own session, output appended to log_path, tagged so its whole tree can be found."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as output:
        return subprocess.Popen(command, env={**env, TAG: tag}, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def tagged(tag: str) -> list[int]:
    """The live processes started under tag (zombies have an empty environment and do not count)."""
    needle = f"{TAG}={tag}\0".encode()
    found = []
    for pid in _pids():
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
    return sorted(found)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal_all(pids: list[int], group: int | None, signum: int) -> None:
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def stop(tag: str, group: int | None = None, timeout: float = 15.0, kill: bool = False) -> None:
    """Stop every process under tag: SIGTERM to its group and to each (SIGKILL after timeout, or at once if kill)."""
    pids = tagged(tag)
    if not pids:
        if group:
            _reap(group)
        return
    _signal_all(pids, group if group in pids else None, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        for pid in pids:
            _reap(pid)
        pids = tagged(tag)
    if pids:
        log.warning("processes %s did not stop in %.0f s; killing them", pids, timeout)
        _signal_all(pids, None, signal.SIGKILL)
        for pid in pids:
            _reap(pid)


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on a TCP port, from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(fields[9])
    return inodes


def listening(port: int) -> bool:
    """Whether any process listens on the TCP port (on any address)."""
    return bool(_listening_inodes(port))


def port_holders(port: int, candidates: list[int] | None = None) -> list[int]:
    """The processes (among candidates, or all this user may inspect) holding a socket that listens on port."""
    sockets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    holders = []
    for pid in candidates if candidates is not None else _pids():
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in sockets for fd in Path(f"/proc/{pid}/fd").iterdir()):
                holders.append(pid)
    return holders


def describe(pid: int) -> str:
    """'pid 123 (python -m mlflow server ...)', for messages about who holds a port."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"pid {pid} ({command[:120]})"


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(ready, what: str, alive, log_path: Path, timeout: float) -> None:
    """Poll ready() until it holds; fail with the log's tail when alive() turns false or timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BertpipeError(f"{what} exited while starting; see {log_path}:\n{tail(log_path)}")
        if ready():
            return
        time.sleep(0.2)
    raise BertpipeError(f"{what} did not become ready within {timeout:.0f} s; see {log_path}:\n{tail(log_path)}")
