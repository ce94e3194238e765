"""One API over local paths and s3:// URIs, so every step runs the same locally and on a cluster.

Writes are atomic: a reader never sees half a file (local files are written
beside the target and renamed; an S3 object appears whole on PUT). Credentials,
endpoint and region come only from the standard AWS environment and config
(AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, ~/.aws/...), never from arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterator

from components.errors import BertpipeError

S3_SCHEME = "s3://"


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEME)


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URI."""
    base = str(base)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b'); refuses keys that climb out of their prefix."""
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise BertpipeError(f"S3 URI has no bucket: {uri!r}")
    if any(part in ("..", ".") for part in key.split("/")):
        raise BertpipeError(f"S3 URI may not contain '.' or '..' path segments: {uri!r}")
    return bucket, key


@lru_cache(maxsize=1)
def s3_client():
    """A boto3 S3 client with bounded timeouts and retries, configured from the environment."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=float(os.environ.get("BERTPIPE_S3_CONNECT_TIMEOUT", "10")),
        read_timeout=float(os.environ.get("BERTPIPE_S3_READ_TIMEOUT", "60")),
        retries={"max_attempts": int(os.environ.get("BERTPIPE_S3_MAX_ATTEMPTS", "5")), "mode": "standard"},
    )
    return boto3.client("s3", config=config)


@contextlib.contextmanager
def _s3_errors(uri: str):
    """Turn boto errors into one-line messages that say what to fix."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError as error:
        raise BertpipeError(f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from error
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        raise BertpipeError(f"S3 refused {uri}: {code or error}") from error
    except BotoCoreError as error:
        raise BertpipeError(f"S3 unreachable for {uri}: {error}") from error


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    try:
        with _s3_errors(uri):
            s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except BertpipeError as error:
        if isinstance(error.__cause__, ClientError) and error.__cause__.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise


def read_bytes(uri: str) -> bytes:
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = split_s3(uri)
    with _s3_errors(uri):
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def write_bytes(uri: str, data: bytes) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str):
    return json.loads(read_bytes(uri))


def write_json(uri: str, value) -> None:
    write_text(uri, json.dumps(value, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    """A binary stream: a local file, or an S3 object streamed without holding it in memory."""
    if not is_s3(uri):
        with open(uri, "rb") as handle:
            yield handle
        return
    bucket, key = split_s3(uri)
    with _s3_errors(uri):
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    try:
        yield body
    finally:
        body.close()


def list_files(prefix: str) -> list[str]:
    """All files under a local folder or s3:// prefix, as full paths/URIs, sorted."""
    if not is_s3(prefix):
        root = Path(prefix)
        if root.is_file():
            return [str(root)]
        return sorted(str(p) for p in root.rglob("*") if p.is_file())
    bucket, key = split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    found = []
    with _s3_errors(prefix):
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            found += [f"{S3_SCHEME}{bucket}/{obj['Key']}" for obj in page.get("Contents", [])]
    return sorted(found)


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local folder to a local path or s3:// prefix (file by file, each write atomic)."""
    local_dir = Path(local_dir)
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(local_dir).as_posix()
        if is_s3(uri):
            bucket, key = split_s3(join(uri, relative))
            with _s3_errors(uri):
                s3_client().upload_file(str(path), bucket, key)
        else:
            write_bytes(join(uri, relative), path.read_bytes())


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy every file under a local folder or s3:// prefix into local_dir."""
    local_dir = Path(local_dir)
    base = uri.rstrip("/") + "/" if is_s3(uri) else str(Path(uri)) + os.sep
    for source in list_files(uri):
        target = local_dir / source[len(base):]
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_s3(source):
            bucket, key = split_s3(source)
            with _s3_errors(source):
                s3_client().download_file(bucket, key, str(target))
        else:
            shutil.copyfile(source, target)
    return local_dir


@contextlib.contextmanager
def local_dir(uri: str) -> Iterator[Path]:
    """A local folder holding the files at uri: the folder itself, or a temporary download of an S3 prefix."""
    if not is_s3(uri):
        if not Path(uri).is_dir():
            raise BertpipeError(f"folder not found: {uri}")
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="bertpipe-") as tmp:
        download_dir(uri, tmp)
        if not any(Path(tmp).iterdir()):
            raise BertpipeError(f"nothing found under {uri}")
        yield Path(tmp)


@contextlib.contextmanager
def staged_dir(uri: str) -> Iterator[Path]:
    """A local folder to write into; published to uri when the block ends without error.

    Locally the folder is built beside the target and swapped in by rename, so a
    reader sees the old folder or the complete new one, never a mix.
    """
    if is_s3(uri):
        with tempfile.TemporaryDirectory(prefix="bertpipe-") as tmp:
            yield Path(tmp)
            upload_dir(tmp, uri)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, retired / "old")
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
