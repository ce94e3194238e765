"""Output locations checked when a step starts, so a bad one fails in a second instead of after the work.

`check_output(uri, flag)` refuses a local path that is a file (or lies under one) or
whose folder cannot be written, and an S3 prefix whose bucket is missing or refuses
writes. It proves writability by writing and deleting a probe file or object (os.access
says yes to root and knows nothing of read-only mounts or bucket policies) and creates
no folder, so a refused location is left exactly as it was.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from components.core.errors import BertpipeError
from components.core.storage import s3
from components.core.storage.paths import is_s3, join, split_s3

PROBE_PREFIX = ".bertpipe-write-check-"


def check_output(uri: str, flag: str = "--output-uri") -> None:
    """Fail now, in one line naming `flag`, if the step could not write its outputs to uri."""
    if not uri:
        raise BertpipeError(f"{flag} is empty: pass a local folder or an s3://bucket/prefix")
    if is_s3(uri):
        _check_s3(uri, flag)
    else:
        _check_local(Path(uri), flag)


def _check_local(path: Path, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise BertpipeError(f"{flag} {path} is a file, not a folder: pass a folder (an existing one or one to create)")
    existing = path
    while not existing.exists():  # the nearest existing folder is where the step's folders would be made
        existing = existing.parent
    if not existing.is_dir():
        raise BertpipeError(f"{flag} {path} cannot be created: {existing} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=PROBE_PREFIX)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise BertpipeError(f"{flag} {path} is not writable ({error.strerror or error} in {existing}): pass a folder you can write to") from None


def _check_s3(uri: str, flag: str) -> None:
    bucket, _ = split_s3(uri)
    s3.check_bucket(bucket, uri)
    probe = join(uri, PROBE_PREFIX + uuid.uuid4().hex)
    _, key = split_s3(probe)
    try:
        with s3.s3_errors(uri):
            s3.s3_client().put_object(Bucket=bucket, Key=key, Body=b"")
            s3.s3_client().delete_object(Bucket=bucket, Key=key)
    except BertpipeError as error:
        raise BertpipeError(f"{flag} {uri} is not writable: {error}") from error.__cause__
