"""A mutex over one registered model's aliases, built on the only atomic step MLflow's registry offers.

MLflow has no compare-and-set and no compare-and-delete. Creating a registered
model is atomic, though: the store's unique key on the name lets exactly one of
several concurrent `create_registered_model` calls succeed (sqlite, PostgreSQL
and MySQL stores alike, directly or through a tracking server). So:

- hold the lock = own the registered model `<name>.bertpipe-lock`, tagged with a
  token unique to this acquisition;
- delete the lock (release it, or break a dead holder's) = first own the
  tombstone `<name>.bertpipe-lock.<token>` for the token read, then re-read the
  lock and delete it only if it still carries that token, then drop the
  tombstone. Only the tombstone's owner can delete lock <token>, so the lock it
  re-read is still the one it deletes: nobody ever deletes a lock they did not
  mean to, which is the race a plain delete-by-name has (a breaker deleting the
  lock the next holder just took, or a slow holder releasing someone else's);
- a lock is stale when the same token has been seen for `stale_after_s` on this
  process's monotonic clock (no comparison of clocks across hosts). A tombstone
  left by a process that died within those few milliseconds is broken the same
  way after `stale_after_s`.

Assumes no holder pauses longer than `stale_after_s` inside the lock (moving an
alias takes milliseconds); like any lease, a longer pause lets a second holder in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
import uuid
from typing import Iterator

from components.core.errors import BertpipeError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".bertpipe-lock"
HOLDER_TAG = "bertpipe.lock.holder"
TOKEN_TAG = "bertpipe.lock.token"
STALE_AFTER_S = 120.0  # a lock whose token is unchanged this long is a dead holder's


def lock_name(registered_model_name: str) -> str:
    return registered_model_name + LOCK_SUFFIX


def _error_code(error) -> str:
    return getattr(error, "error_code", "")


def _try_create(client, name: str, tags: dict[str, str], description: str) -> bool:
    """Create registered model `name`; False when it already exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags=tags, description=description)
        return True
    except MlflowException as error:
        # RESOURCE_DOES_NOT_EXIST: the name existed at the insert and was gone when the store looked it up
        # to word its "already exists" error (mlflow's SqlAlchemyStore does that): contended all the same.
        if _error_code(error) not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            raise
        return False


def _token_of(client, name: str) -> str | None:
    """The token of the lock `name`, or None when there is no such lock."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        if _error_code(error) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return model.tags.get(TOKEN_TAG, "")


def _delete(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model(name)
    except MlflowException as error:
        if _error_code(error) != "RESOURCE_DOES_NOT_EXIST":
            raise


def _tombstone(name: str, token: str) -> str:
    return f"{name}.{token or 'untokened'}"


def _delete_if_token(client, name: str, token: str) -> bool:
    """Delete lock `name` if it carries `token` (through the token's tombstone); True if this call deleted it."""
    tombstone = _tombstone(name, token)
    if not _try_create(client, tombstone, {}, f"bertpipe is deleting lock {name} ({token}); safe to delete after a minute"):
        return False
    try:
        if _token_of(client, name) != token:
            return False
        _delete(client, name)
        return True
    finally:
        _delete(client, tombstone)


class _Staleness:
    """How long each token has been seen unchanged, on this process's clock."""

    def __init__(self, stale_after_s: float):
        self.stale_after_s = stale_after_s
        self.first_seen: dict[str, float] = {}

    def is_stale(self, key: str) -> bool:
        now = time.monotonic()
        return now - self.first_seen.setdefault(key, now) >= self.stale_after_s


def _break_if_stale(client, name: str, staleness: _Staleness) -> None:
    token = _token_of(client, name)
    if token is None:
        return
    if staleness.is_stale(f"lock:{token}"):
        if _delete_if_token(client, name, token):
            log.warning("broke stale registry lock %s (token %s unchanged for %.0f s)", name, token, staleness.stale_after_s)
        elif _token_of(client, _tombstone(name, token)) is not None and staleness.is_stale(f"tombstone:{token}"):
            # Whoever started deleting this lock died in the middle: finish for them.
            _delete(client, _tombstone(name, token))


@contextlib.contextmanager
def alias_lock(client, registered_model_name: str, *, actor: str, timeout_s: float = 60.0, stale_after_s: float | None = None) -> Iterator[str]:
    """Hold the alias lock of registered_model_name for the duration of the block (waits up to timeout_s); yields the token.

    stale_after_s defaults to STALE_AFTER_S."""
    stale_after_s = STALE_AFTER_S if stale_after_s is None else stale_after_s
    name = lock_name(registered_model_name)
    token = uuid.uuid4().hex
    holder = f"{actor} on {socket.gethostname()} pid {os.getpid()}"
    description = f"bertpipe holds this while it moves aliases of {registered_model_name}; safe to delete when nothing is promoting"
    staleness = _Staleness(stale_after_s)
    deadline = time.monotonic() + timeout_s
    while not _try_create(client, name, {HOLDER_TAG: holder, TOKEN_TAG: token}, description):
        _break_if_stale(client, name, staleness)
        if time.monotonic() > deadline:
            raise BertpipeError(
                f"another promotion of {registered_model_name} has held the registry lock {name} for over {timeout_s:.0f} s; "
                f"retry later, or delete the registered model {name} if no promotion is running"
            )
        time.sleep(random.uniform(0.05, 0.25))
    try:
        yield token
    finally:
        try:
            released = _delete_if_token(client, name, token)
        except Exception as error:  # the lock then expires after stale_after_s
            log.warning("could not release registry lock %s (%s); it will be broken after %.0f s", name, error, stale_after_s)
        else:
            if not released:
                log.warning("registry lock %s was broken while this process held it (held longer than %.0f s?)", name, stale_after_s)
