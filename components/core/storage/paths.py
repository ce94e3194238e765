"""Path safety for local paths and s3:// URIs: nothing joined or read from a manifest may climb out of its folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from components.core.errors import BertpipeError

S3_SCHEME = "s3://"
# Names reserved in every published folder (see publication.py); folder copies skip them.
PUBLISHED_FILE = "_published.json"
PUBLISHING_FILE = "_publishing.json"
MARKER_FILES = (PUBLISHED_FILE, PUBLISHING_FILE)

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEME)


def check_relative(part: str, context: str) -> None:
    """Refuse path pieces that could climb out of the folder they are joined onto."""
    pieces = part.replace("\\", "/").split("/")
    if part.startswith(("/", "\\")) or any(piece in ("..", ".") for piece in pieces) or "\x00" in part:
        raise BertpipeError(f"path {part!r} in {context} must be relative and may not contain '.' or '..' segments")


def join(base: str, *parts: str) -> str:
    """Join relative path parts onto a local path or an s3:// URI (parts may not climb out with '..')."""
    base = str(base)
    for part in parts:
        check_relative(part.strip("/") if is_s3(base) else part, base)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b'); refuses bad bucket names and keys that climb out of their prefix."""
    bucket, _, key = str(uri)[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise BertpipeError(f"S3 URI has no bucket: {uri!r}")
    if not _BUCKET_NAME.match(bucket):
        raise BertpipeError(f"S3 URI {uri!r} has an invalid bucket name {bucket!r} (3-63 lowercase letters, digits, '.', '-')")
    segments = key.split("/")
    if any(segment in ("..", ".") for segment in segments) or "//" in key.rstrip("/") or "\\" in key or "\x00" in key:
        raise BertpipeError(f"S3 URI may not contain '.', '..', empty or backslash path segments: {uri!r}")
    return bucket, key


def relative_to(uri: str, base: str) -> str:
    """The part of uri below base, as a checked relative path with '/' separators."""
    base = base.rstrip("/") + "/" if is_s3(base) else str(Path(base)) + os.sep
    relative = uri[len(base):].replace(os.sep, "/")
    check_relative(relative, base)
    return relative
