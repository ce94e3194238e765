"""Single files and folder copies, the same calls for local paths and s3:// URIs.

Every write is atomic: a local file is written beside its target and renamed
into place (with the permissions the umask gives a new file, as `open` would),
an S3 object appears whole when its (multipart) upload completes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from components.core.errors import BertpipeError
from components.core.storage import s3
from components.core.storage.paths import MARKER_FILES, S3_SCHEME, check_relative, is_s3, join, relative_to, split_s3


def umask() -> int:
    """The process umask, read from /proc: os.umask reads it only by setting it, which races with other threads."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path, mode: int) -> None:
    """Give a file or folder made by tempfile (0600 / 0700) the mode a plain open / mkdir would have given it."""
    os.chmod(path, mode & ~umask())


def exists(uri: str) -> bool:
    """Whether a file or object exists; a missing S3 bucket is an error, not a missing file."""
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(uri)
    try:
        with s3.s3_errors(uri):
            s3.s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except BertpipeError as error:
        if not s3.is_not_found(error):
            raise
    s3.check_bucket(bucket, uri)  # HEAD answers a bare 404 for a missing bucket too
    return False


def read_bytes(uri: str) -> bytes:
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise BertpipeError(f"not found: {uri}") from None
    bucket, key = split_s3(uri)
    with s3.s3_errors(uri):
        return s3.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file atomically (multipart on S3 above BERTPIPE_S3_MULTIPART_MB)."""
    if is_s3(uri):
        s3.upload_stream(io.BytesIO(data), uri)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as output:
            output.write(data)
        honour_umask(tmp, 0o666)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str):
    return json.loads(read_bytes(uri))


def write_json(uri: str, value) -> None:
    write_text(uri, json.dumps(value, indent=2, sort_keys=True) + "\n")


def delete(uri: str) -> None:
    """Remove one file or object; a missing one is not an error."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with s3.s3_errors(uri):
            s3.s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        Path(uri).unlink(missing_ok=True)


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    """A binary stream: a local file, or an S3 object streamed without holding it in memory."""
    if not is_s3(uri):
        with open(uri, "rb") as handle:
            yield handle
        return
    bucket, key = split_s3(uri)
    with s3.s3_errors(uri):
        body = s3.s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with s3.s3_errors(uri):
            yield body
    finally:
        body.close()


def _s3_objects(prefix: str) -> dict[str, dict]:
    """Every object under an s3:// prefix, by URI, with its listing entry (Size, ETag): one paginated listing."""
    bucket, key = split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    found = {}
    with s3.s3_errors(prefix):
        for page in s3.s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            found.update({f"{S3_SCHEME}{bucket}/{obj['Key']}": obj for obj in page.get("Contents", [])})
    return found


def list_files(prefix: str) -> list[str]:
    """All files under a local folder or s3:// prefix, as full paths/URIs, sorted."""
    if not is_s3(prefix):
        root = Path(prefix)
        if root.is_file():
            return [str(root)]
        return sorted(str(p) for p in root.rglob("*") if p.is_file())
    return sorted(_s3_objects(prefix))


def _sizes_and_versions(prefix: str) -> dict[str, tuple[int, str]]:
    """Every file under a local folder or s3:// prefix (or one local file): its size and a version that changes when
    it is rewritten (mtime_ns locally, the ETag on S3). One listing, no object is read."""
    if not is_s3(prefix):
        stats = {path: os.stat(path) for path in list_files(prefix)}
        return {path: (stat.st_size, str(stat.st_mtime_ns)) for path, stat in stats.items()}
    return {uri: (obj["Size"], obj["ETag"].strip(chr(34))) for uri, obj in _s3_objects(prefix).items()}


def file_stamps(prefix: str) -> dict[str, str]:
    """Every file under a local folder or s3:// prefix (or one local file) with a stamp that changes when it is
    rewritten: "size:mtime_ns" locally, "size:ETag" on S3 (one listing, no object is read)."""
    return {path: f"{size}:{version}" for path, (size, version) in _sizes_and_versions(prefix).items()}


def file_sizes(prefix: str) -> dict[str, int]:
    """Every file under a local folder or s3:// prefix (or one local file) with its size in bytes (one listing)."""
    return {path: size for path, (size, _) in _sizes_and_versions(prefix).items()}


def relative_files(local_dir: Path) -> list[str]:
    return sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy every file under a local folder or s3:// prefix into local_dir (never writing outside it; markers skipped)."""
    local_dir = Path(local_dir)
    relatives = [relative_to(source, uri) for source in list_files(uri)]
    copy_into(uri, [relative for relative in relatives if Path(relative).name not in MARKER_FILES], local_dir)
    return local_dir


def copy_into(uri: str, relatives: list[str], local_dir: Path) -> None:
    """Copy the named files of the folder at uri into local_dir; a missing one means the folder is incomplete."""
    def fetch(relative: str) -> None:
        check_relative(relative, uri)
        target = local_dir / relative
        if is_s3(uri):
            try:
                s3.download_file(join(uri, relative), target)
            except BertpipeError as error:
                if s3.is_not_found(error):
                    raise BertpipeError(f"{uri} is incomplete: {relative} is missing") from error
                raise
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(join(uri, relative), target)

    s3.parallel(fetch, relatives)
