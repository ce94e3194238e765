"""Publishing folders (vocabs, checkpoints, models): files first, a manifest last, readers verify.

`staged_dir` is the one way to publish: the files are written first and a
manifest, PUBLISHED_FILE, listing every file with its size and sha256, is
written last. A folder without that manifest is not (yet) published; readers
(`local_dir`, `read_published`) check it and verify every checksum, so they
never use half of an artifact. On S3 a publication in progress is marked by
PUBLISHING_FILE, so an interrupted one is reported as such instead of looking
like a foreign folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from components.core.errors import BertpipeError
from components.core.storage import s3
from components.core.storage.files import (
    copy_into, delete, download_dir, exists, honour_umask, list_files, read_json, relative_files, write_json,
)
from components.core.storage.paths import (
    MARKER_FILES, PUBLISHED_FILE, PUBLISHING_FILE, check_relative, is_s3, join, relative_to, split_s3,
)

log = logging.getLogger(__name__)

PUBLICATION_FORMAT = 1


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_of(local_dir: Path) -> dict:
    files = {
        relative: {"size": (local_dir / relative).stat().st_size, "sha256": _sha256_file(local_dir / relative)}
        for relative in relative_files(local_dir)
        if relative not in MARKER_FILES
    }
    return {"format": PUBLICATION_FORMAT, "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}


def read_published(uri: str) -> dict:
    """The publication manifest of a folder ({files: {relative path: {size, sha256}}}); refuses unpublished folders."""
    manifest_uri = join(uri, PUBLISHED_FILE)
    if exists(manifest_uri):
        manifest = read_json(manifest_uri)
        for relative in manifest.get("files", {}):
            check_relative(relative, manifest_uri)
        return manifest
    if is_s3(uri) and exists(join(uri, PUBLISHING_FILE)):
        raise BertpipeError(f"{uri} is incomplete: its publication was interrupted; re-run the step that writes it")
    raise BertpipeError(f"{uri} is not a published folder ({PUBLISHED_FILE} missing): it is absent or still being written")


def _verify_dir(folder: Path, manifest: dict, uri: str) -> None:
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
    s3.parallel(lambda relative: s3.upload_file(local_dir / relative, join(uri, relative)), manifest["files"])
    stale = [f for f in list_files(uri) if relative_to(f, uri) not in manifest["files"] and not f.endswith("/" + PUBLISHING_FILE)]
    s3.parallel(delete, stale)
    write_json(join(uri, PUBLISHED_FILE), manifest)
    delete(join(uri, PUBLISHING_FILE))
    log.info("published %d files to %s", len(manifest["files"]), uri)
    return manifest


def _has_marker(uri: str) -> bool:
    return any(exists(join(uri, marker)) for marker in MARKER_FILES)


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
            _verify_dir(Path(uri), manifest, uri)
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="bertpipe-") as tmp:
        if manifest:
            copy_into(uri, list(manifest["files"]), Path(tmp))
            if verify:
                _verify_dir(Path(tmp), manifest, uri)
        else:
            download_dir(uri, tmp)
            if not any(Path(tmp).iterdir()):
                raise BertpipeError(f"nothing found under {uri}")
        yield Path(tmp)


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
    if target.exists() and not target.is_dir():  # the swap below would replace the file with the folder
        raise BertpipeError(f"{uri} is a file, not a folder: publish to a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    try:
        yield staging
        write_json(str(staging / PUBLISHED_FILE), _manifest_of(staging))
        honour_umask(staging, 0o777)  # mkdtemp made it 0700; the published folder is a plain folder
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, retired / "old")
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
