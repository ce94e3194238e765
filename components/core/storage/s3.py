"""The S3 client: built from the standard AWS environment only, with bounded timeouts and retries,
and boto errors turned into one line that names the endpoint and says what to fix.

Credentials, endpoint and region come only from the standard AWS environment and
config (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3,
AWS_DEFAULT_REGION, ~/.aws/...), never from arguments, and never appear in
messages. Timeouts and retries are bounded (BERTPIPE_S3_CONNECT_TIMEOUT,
BERTPIPE_S3_READ_TIMEOUT, BERTPIPE_S3_MAX_ATTEMPTS) so a dead or hanging server
fails a step in about a minute.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from components.core.errors import BertpipeError
from components.core.storage.paths import split_s3

log = logging.getLogger(__name__)

TRANSFER_THREADS = 8

# Environment that decides which S3 client to build; a change (tests, the stack) builds a new one.
_CLIENT_ENV = (
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "BERTPIPE_S3_CONNECT_TIMEOUT", "BERTPIPE_S3_READ_TIMEOUT", "BERTPIPE_S3_MAX_ATTEMPTS", "BERTPIPE_S3_MULTIPART_MB",
)
_client_lock = threading.Lock()
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken", "403"}


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
def s3_errors(uri: str):
    """Turn boto errors into BertpipeError with one line that says what to fix."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as error:
        raise BertpipeError(_describe(error, uri)) from error


def is_not_found(error: BertpipeError) -> bool:
    """Whether an error raised by s3_errors was S3 saying the key does not exist."""
    from botocore.exceptions import ClientError

    root = _root_error(error.__cause__) if error.__cause__ else None
    return isinstance(root, ClientError) and _error_code(root) in ("404", "NoSuchKey")


def check_bucket(bucket: str, uri: str) -> None:
    """Fail clearly when uri's bucket does not exist (HEAD on a key answers a bare 404 for that too)."""
    try:
        with s3_errors(uri):
            s3_client().head_bucket(Bucket=bucket)
    except BertpipeError as error:
        if is_not_found(error):
            raise BertpipeError(f"S3 bucket {bucket!r} of {uri} does not exist at {s3_client().meta.endpoint_url}: "
                                "create it or fix the URI") from error.__cause__
        raise


def parallel(function, items) -> list:
    """Run function over items on the transfer threads (S3 latency dominates small files)."""
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
        return list(pool.map(function, items))


def upload_file(path: Path, uri: str) -> None:
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        s3_client().upload_file(str(path), bucket, key, Config=_transfer_config())


def upload_stream(stream, uri: str) -> None:
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        s3_client().upload_fileobj(stream, bucket, key, Config=_transfer_config())


def download_file(uri: str, target: Path) -> None:
    bucket, key = split_s3(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    with s3_errors(uri):
        s3_client().download_file(bucket, key, str(target), Config=_transfer_config())
