"""One API over local paths and s3:// URIs, so every step runs the same locally and on a cluster.

Single files are written atomically: a local file is written beside its target
and renamed, an S3 object appears whole when its (multipart) upload completes.

Folders (vocabs, checkpoints, models) are published with one mechanism,
`staged_dir`: the files are written first and a manifest, PUBLISHED_FILE,
listing every file with its size and sha256, is written last. A folder without
that manifest is not (yet) published; readers (`local_dir`, `read_published`)
check it and verify every checksum, so they never use half of an artifact. On
S3 a publication in progress is marked by PUBLISHING_FILE, so an interrupted
one is reported as such instead of looking like a foreign folder.

Credentials, endpoint and region come only from the standard AWS environment and
config (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3,
AWS_DEFAULT_REGION, ~/.aws/...), never from arguments, and never appear in
messages. Timeouts and retries are bounded (BERTPIPE_S3_CONNECT_TIMEOUT,
BERTPIPE_S3_READ_TIMEOUT, BERTPIPE_S3_MAX_ATTEMPTS) so a dead or hanging server
fails a step in about a minute, with a message that names the endpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterator

from components.core.errors import BertpipeError

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"
PUBLISHED_FILE = "_published.json"
PUBLISHING_FILE = "_publishing.json"
MARKER_FILES = (PUBLISHED_FILE, PUBLISHING_FILE)
PUBLICATION_FORMAT = 1
TRANSFER_THREADS = 8

# Environment that decides which S3 client to build; a change (tests, the stack) builds a new one.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "BERTPIPE_S3_CONNECT_TIMEOUT", "BERTPIPE_S3_READ_TIMEOUT", "BERTPIPE_S3_MAX_ATTEMPTS", "BERTPIPE_S3_MULTIPART_MB",
)
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_client_lock = threading.Lock()


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_SCHEME)


def _check_relative(part: str, context: str) -> None:
    """Refuse path pieces that could climb out of the folder they are joined onto."""
    pieces = part.replace("\\", "/").split("/")
    if part.startswith(("/", "\\")) or any(piece in ("..", ".") for piece in pieces) or "\x00" in part:
        raise BertpipeError(f"path {part!r} in {context} must be relative and may not contain '.' or '..' segments")


def join(base: str, *parts: str) -> str:
    """Join relative path parts onto a local path or an s3:// URI (parts may not climb out with '..')."""
    base = str(base)
    for part in parts:
        _check_relative(part.strip("/") if is_s3(base) else part, base)
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


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise BertpipeError(f"{name} must be an integer, got {os.environ[name]!r}") from None


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        raise BertpipeError(f"{name} must be a number, got {os.environ[name]!r}") from None


def s3_client():
    """A boto3 S3 client with bounded timeouts and retries, configured from the current environment."""
    return _client_for(tuple(os.environ.get(name) for name in _CLIENT_ENV))


@lru_cache(maxsize=4)
def _client_for(_environment: tuple):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=_env_float("BERTPIPE_S3_CONNECT_TIMEOUT", 5),
        read_timeout=_env_float("BERTPIPE_S3_READ_TIMEOUT", 20),
        # "legacy" retries connection errors, timeouts and 5xx with exponential backoff like "standard",
        # without standard's per-client retry quota, which a burst of parallel transfer failures (a server
        # restarting) drains, leaving every later request of the client with no retries at all.
        retries={"total_max_attempts": _env_int("BERTPIPE_S3_MAX_ATTEMPTS", 4), "mode": "legacy"},
        max_pool_connections=TRANSFER_THREADS * 2,
        tcp_keepalive=True,
    )
    with _client_lock:  # boto3 sessions are not thread-safe while building clients
        client = boto3.session.Session().client("s3", config=config)
    log.debug("S3 client for endpoint %s", client.meta.endpoint_url)
    return client


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    part = _env_int("BERTPIPE_S3_MULTIPART_MB", 64) * 1024 * 1024
    return TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=TRANSFER_THREADS)


def _root_error(error: BaseException) -> BaseException:
    """The botocore error under boto3's transfer wrappers (which keep it as context or last_exception)."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen = error
    while not isinstance(seen, (BotoCoreError, ClientError)):
        inner = getattr(seen, "last_exception", None) or seen.__cause__ or seen.__context__
        if inner is None:
            return error
        seen = inner
    return seen


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken", "403"}


def _describe(error: BaseException, uri: str) -> str:
    """One line that says what went wrong with uri and what to fix; never includes credentials."""
    from botocore.exceptions import (
        ClientError, ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError,
        ReadTimeoutError,
    )

    root = _root_error(error)
    endpoint = s3_client().meta.endpoint_url
    attempts = _env_int("BERTPIPE_S3_MAX_ATTEMPTS", 4)
    if isinstance(root, NoCredentialsError):
        return f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile)"
    if isinstance(root, (ReadTimeoutError, ConnectTimeoutError)):
        timeout = _env_float("BERTPIPE_S3_READ_TIMEOUT", 20)
        return (f"S3 at {endpoint} did not answer for {uri} (timed out after {timeout:g} s, {attempts} attempts): "
                "is the server up and reachable? (BERTPIPE_S3_READ_TIMEOUT sets the limit)")
    if isinstance(root, (EndpointConnectionError, ConnectionClosedError)):
        return f"cannot reach S3 at {endpoint} for {uri} after {attempts} attempts: is the server up? (AWS_ENDPOINT_URL_S3 sets the endpoint)"
    if isinstance(root, ClientError):
        code = _error_code(root)
        if code == "NoSuchBucket":
            return f"S3 bucket {split_s3(uri)[0]!r} of {uri} does not exist at {endpoint}: create it or fix the URI"
        if code in _CREDENTIAL_CODES:
            return (f"S3 at {endpoint} refused the credentials for {uri} ({code}): check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY and the bucket's permissions")
        if code in ("404", "NoSuchKey"):
            return f"not found: {uri}"
        return f"S3 at {endpoint} refused {uri}: {code or root}"
    return f"S3 failed for {uri}: {type(root).__name__}: {str(root)[:300]}"


@contextlib.contextmanager
def _s3_errors(uri: str):
    """Turn boto errors into BertpipeError with one line that says what to fix."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as error:
        raise BertpipeError(_describe(error, uri)) from error


def _is_not_found(error: BertpipeError) -> bool:
    from botocore.exceptions import ClientError

    root = _root_error(error.__cause__) if error.__cause__ else None
    return isinstance(root, ClientError) and _error_code(root) in ("404", "NoSuchKey")


def exists(uri: str) -> bool:
    """Whether a file or object exists; a missing S3 bucket is an error, not a missing file."""
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(uri)
    try:
        with _s3_errors(uri):
            s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except BertpipeError as error:
        if not _is_not_found(error):
            raise
    _check_bucket(bucket, uri)  # HEAD answers a bare 404 for a missing bucket too
    return False


def _check_bucket(bucket: str, uri: str) -> None:
    try:
        with _s3_errors(uri):
            s3_client().head_bucket(Bucket=bucket)
    except BertpipeError as error:
        if _is_not_found(error):
            raise BertpipeError(f"S3 bucket {bucket!r} of {uri} does not exist at {s3_client().meta.endpoint_url}: "
                                "create it or fix the URI") from error.__cause__
        raise


def read_bytes(uri: str) -> bytes:
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise BertpipeError(f"not found: {uri}") from None
    bucket, key = split_s3(uri)
    with _s3_errors(uri):
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file atomically (multipart on S3 above BERTPIPE_S3_MULTIPART_MB)."""
    import io

    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().upload_fileobj(io.BytesIO(data), bucket, key, Config=_transfer_config())
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


def delete(uri: str) -> None:
    """Remove one file or object; a missing one is not an error."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client().delete_object(Bucket=bucket, Key=key)
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
    with _s3_errors(uri):
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with _s3_errors(uri):
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


def list_dirs(prefix: str) -> list[str]:
    """The direct sub-folders of a local folder or s3:// prefix, as full paths/URIs, sorted."""
    if not is_s3(prefix):
        root = Path(prefix)
        return sorted(str(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    bucket, key = split_s3(prefix)
    key = key.rstrip("/") + "/" if key else ""
    found = []
    with _s3_errors(prefix):
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
            found += [f"{S3_SCHEME}{bucket}/{entry['Prefix'].rstrip('/')}" for entry in page.get("CommonPrefixes", [])]
    return sorted(found)


def _relative_files(local_dir: Path) -> list[str]:
    return sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parallel(function, items) -> list:
    """Run function over items on the transfer threads (S3 latency dominates small files)."""
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
        return list(pool.map(function, items))


def _upload_file(path: Path, uri: str) -> None:
    bucket, key = split_s3(uri)
    with _s3_errors(uri):
        s3_client().upload_file(str(path), bucket, key, Config=_transfer_config())


def _download_file(uri: str, target: Path) -> None:
    bucket, key = split_s3(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _s3_errors(uri):
        s3_client().download_file(bucket, key, str(target), Config=_transfer_config())


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local folder to a local path or s3:// prefix (file by file, each write atomic, in parallel on S3).

    Publication markers are not copied: only publish_dir / staged_dir publish.
    """
    local_dir = Path(local_dir)
    relatives = [relative for relative in _relative_files(local_dir) if Path(relative).name not in MARKER_FILES]
    if is_s3(uri):
        _parallel(lambda relative: _upload_file(local_dir / relative, join(uri, relative)), relatives)
        return
    for relative in relatives:
        target = Path(join(uri, relative))
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(handle)
        shutil.copyfile(local_dir / relative, tmp)
        os.replace(tmp, target)


def _relative_to(uri: str, base: str) -> str:
    base = base.rstrip("/") + "/" if is_s3(base) else str(Path(base)) + os.sep
    relative = uri[len(base):].replace(os.sep, "/")
    _check_relative(relative, base)
    return relative


def download_dir(uri: str, local_dir: str | Path) -> Path:
    """Copy every file under a local folder or s3:// prefix into local_dir (never writing outside it; markers skipped)."""
    local_dir = Path(local_dir)
    relatives = [_relative_to(source, uri) for source in list_files(uri)]
    _copy_into(uri, [relative for relative in relatives if Path(relative).name not in MARKER_FILES], local_dir)
    return local_dir


def _copy_into(uri: str, relatives: list[str], local_dir: Path) -> None:
    def fetch(relative: str) -> None:
        _check_relative(relative, uri)
        target = local_dir / relative
        if is_s3(uri):
            try:
                _download_file(join(uri, relative), target)
            except BertpipeError as error:
                if _is_not_found(error):
                    raise BertpipeError(f"{uri} is incomplete: {relative} is missing") from error
                raise
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(join(uri, relative), target)

    _parallel(fetch, relatives)


# ---- publication: files first, manifest last ------------------------------------------------


def _manifest_of(local_dir: Path) -> dict:
    files = {
        relative: {"size": (local_dir / relative).stat().st_size, "sha256": _sha256_file(local_dir / relative)}
        for relative in _relative_files(local_dir)
        if relative not in MARKER_FILES
    }
    return {"format": PUBLICATION_FORMAT, "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}


def is_published(uri: str) -> bool:
    """Whether a folder was completely published (its manifest exists)."""
    return exists(join(uri, PUBLISHED_FILE))


def read_published(uri: str) -> dict:
    """The publication manifest of a folder ({files: {relative path: {size, sha256}}}); refuses unpublished folders."""
    manifest_uri = join(uri, PUBLISHED_FILE)
    if exists(manifest_uri):
        manifest = read_json(manifest_uri)
        for relative in manifest.get("files", {}):
            _check_relative(relative, manifest_uri)
        return manifest
    if is_s3(uri) and exists(join(uri, PUBLISHING_FILE)):
        raise BertpipeError(f"{uri} is incomplete: its publication was interrupted; re-run the step that writes it")
    raise BertpipeError(f"{uri} is not a published folder ({PUBLISHED_FILE} missing): it is absent or still being written")


def verify_dir(folder: Path, manifest: dict, uri: str) -> None:
    """Check that every file of a publication manifest is in folder with its recorded size and sha256."""
    for relative, expected in manifest["files"].items():
        path = folder / relative
        if not path.is_file():
            raise BertpipeError(f"{uri} is incomplete: {relative} is missing")
        if path.stat().st_size != expected["size"] or _sha256_file(path) != expected["sha256"]:
            raise BertpipeError(f"{uri}: {relative} does not match its recorded checksum; it is corrupt or was overwritten")


def publish_dir(local_dir: str | Path, uri: str) -> dict:
    """Publish a local folder to an s3:// prefix: marker, files, manifest last; returns the manifest.

    Stale files of an earlier publication at uri are removed before the manifest
    is written, so the published folder holds exactly the manifest's files.
    """
    local_dir = Path(local_dir)
    manifest = _manifest_of(local_dir)
    write_json(join(uri, PUBLISHING_FILE), {"started_at": manifest["published_at"]})
    delete(join(uri, PUBLISHED_FILE))
    _parallel(lambda relative: _upload_file(local_dir / relative, join(uri, relative)), manifest["files"])
    stale = [f for f in list_files(uri) if _relative_to(f, uri) not in manifest["files"] and not f.endswith("/" + PUBLISHING_FILE)]
    _parallel(delete, stale)
    write_json(join(uri, PUBLISHED_FILE), manifest)
    delete(join(uri, PUBLISHING_FILE))
    log.info("published %d files to %s", len(manifest["files"]), uri)
    return manifest


@contextlib.contextmanager
def local_dir(uri: str, verify: bool = True) -> Iterator[Path]:
    """A local folder holding the files at uri: the folder itself, or a temporary download of an S3 prefix.

    A published folder (see staged_dir) is checked against its manifest (only its
    files are downloaded, each checksum verified unless verify=False); a folder
    whose publication was interrupted is refused; a folder written by other tools
    (no manifest) is used as it is.
    """
    manifest = read_published(uri) if _has_marker(uri) else None
    if not is_s3(uri):
        if not Path(uri).is_dir():
            raise BertpipeError(f"folder not found: {uri}")
        if manifest and verify:
            verify_dir(Path(uri), manifest, uri)
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="bertpipe-") as tmp:
        if manifest:
            _copy_into(uri, list(manifest["files"]), Path(tmp))
            if verify:
                verify_dir(Path(tmp), manifest, uri)
        else:
            download_dir(uri, tmp)
            if not any(Path(tmp).iterdir()):
                raise BertpipeError(f"nothing found under {uri}")
        yield Path(tmp)


def _has_marker(uri: str) -> bool:
    return any(exists(join(uri, marker)) for marker in MARKER_FILES)


@contextlib.contextmanager
def staged_dir(uri: str) -> Iterator[Path]:
    """A local folder to write into; published to uri when the block ends without error.

    The published folder gets a manifest (PUBLISHED_FILE) with every file's size
    and sha256. Locally the folder is built beside the target and swapped in by
    rename; on S3 the manifest is written last (see publish_dir). Either way a
    reader sees the old folder or the complete new one, never a mix it accepts.
    """
    if is_s3(uri):
        split_s3(uri)  # refuse a bad URI before the caller does the work
        with tempfile.TemporaryDirectory(prefix="bertpipe-") as tmp:
            yield Path(tmp)
            publish_dir(tmp, uri)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    try:
        yield staging
        write_json(str(staging / PUBLISHED_FILE), _manifest_of(staging))
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, retired / "old")
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
