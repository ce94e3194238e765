"""A mutex over one registered model's aliases, built on the only atomic step MLflow's registry offers.

MLflow has no compare-and-set for aliases. Creating a registered model is
atomic, though: the store's unique key on the name lets exactly one of several
concurrent `create_registered_model` calls succeed (sqlite, PostgreSQL and
MySQL stores alike, directly or through a tracking server); the others get
RESOURCE_ALREADY_EXISTS. So "hold the lock" = "own the registered model
`<name>.bertpipe-lock`", which exists only for the few hundred milliseconds an
alias move takes. A holder that died leaves it behind; a lock older than
`stale_after_s` is broken (deleted) by the next caller, so a crash blocks
promotion for at most that long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from typing import Iterator

from components.core.errors import BertpipeError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".bertpipe-lock"
HOLDER_TAG = "bertpipe.lock.holder"


def lock_name(registered_model_name: str) -> str:
    return registered_model_name + LOCK_SUFFIX


def _already_exists(error) -> bool:
    return getattr(error, "error_code", "") == "RESOURCE_ALREADY_EXISTS"


def _break_if_stale(client, name: str, stale_after_s: float) -> None:
    from mlflow.exceptions import MlflowException

    try:
        lock = client.get_registered_model(name)
    except MlflowException:
        return  # released meanwhile
    age_s = time.time() - lock.creation_timestamp / 1000
    if age_s > stale_after_s:
        log.warning("breaking stale registry lock %s (held by %s for %.0f s)", name, lock.tags.get(HOLDER_TAG, "?"), age_s)
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(name)


@contextlib.contextmanager
def alias_lock(client, registered_model_name: str, *, actor: str, timeout_s: float = 60.0, stale_after_s: float = 120.0) -> Iterator[None]:
    """Hold the alias lock of registered_model_name for the duration of the block (waits up to timeout_s)."""
    from mlflow.exceptions import MlflowException

    name = lock_name(registered_model_name)
    holder = f"{actor} on {socket.gethostname()} pid {os.getpid()}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                name, tags={HOLDER_TAG: holder}, description=f"bertpipe holds this while it moves aliases of {registered_model_name}; safe to delete when nothing is promoting"
            )
            break
        except MlflowException as error:
            if not _already_exists(error):
                raise
        _break_if_stale(client, name, stale_after_s)
        if time.monotonic() > deadline:
            raise BertpipeError(
                f"another promotion of {registered_model_name} has held the registry lock {name} for over {timeout_s:.0f} s; "
                f"retry later, or delete the registered model {name} if no promotion is running"
            )
        time.sleep(random.uniform(0.05, 0.25))
    try:
        yield
    finally:
        try:
            client.delete_registered_model(name)
        except MlflowException:
            log.warning("could not release registry lock %s; it will be broken after %.0f s", name, stale_after_s)
