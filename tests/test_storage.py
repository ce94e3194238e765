"""components.core.storage on local folders and on a real S3 server (SeaweedFS)."""

import hashlib
import json
import os
import uuid

import pytest

from components.core import storage
from components.core.errors import BertpipeError


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A fresh artifact root: a local folder, or a fresh prefix in the test bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    servers = request.getfixturevalue("servers_env")
    return f"s3://{servers.bucket}/test-storage/{uuid.uuid4().hex[:10]}"


def _write_folder(folder, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)


def _published(uri: str) -> bool:
    return storage.exists(storage.join(uri, storage.PUBLISHED_FILE))


FILES = {"config.json": b'{"a": 1}\n', "model.safetensors": os.urandom(70_000), "tokenizer/vocab.txt": b"[PAD]\n[UNK]\n"}


def test_single_files_round_trip(root):
    uri = storage.join(root, "a", "b.json")
    assert not storage.exists(uri)
    storage.write_json(uri, {"x": [1, 2]})
    assert storage.exists(uri)
    assert storage.read_json(uri) == {"x": [1, 2]}
    storage.write_text(uri, "replaced")
    assert storage.read_text(uri) == "replaced"
    with storage.open_read(uri) as stream:
        assert stream.read() == b"replaced"
    assert storage.list_files(root) == [uri]
    storage.delete(uri)
    assert not storage.exists(uri)
    with pytest.raises(BertpipeError, match="not found"):
        storage.read_bytes(uri)


def test_published_folder_records_every_file_with_size_and_sha256(root):
    uri = storage.join(root, "model")
    with storage.staged_dir(uri) as folder:
        _write_folder(folder, FILES)
    manifest = storage.read_published(uri)
    assert manifest["files"] == {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in FILES.items()
    }
    assert _published(uri)
    with storage.local_dir(uri) as local:
        assert {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*") if p.is_file() and p.name != storage.PUBLISHED_FILE} == FILES
    assert [f.rsplit("/", 1)[-1] for f in storage.list_files(uri)] == [storage.PUBLISHED_FILE, "config.json", "model.safetensors", "vocab.txt"]


def test_republishing_replaces_the_folder_and_drops_stale_files(root):
    uri = storage.join(root, "model")
    with storage.staged_dir(uri) as folder:
        _write_folder(folder, FILES)
    with storage.staged_dir(uri) as folder:
        _write_folder(folder, {"config.json": b"{}"})
    assert sorted(storage.read_published(uri)["files"]) == ["config.json"]
    assert sorted(os.path.basename(f) for f in storage.list_files(uri)) == [storage.PUBLISHED_FILE, "config.json"]


def test_a_failed_block_publishes_nothing(root):
    uri = storage.join(root, "model")
    with pytest.raises(RuntimeError):
        with storage.staged_dir(uri) as folder:
            _write_folder(folder, FILES)
            raise RuntimeError("training crashed")
    assert storage.list_files(root) == [] if storage.is_s3(root) else not os.path.exists(uri)
    assert not _published(uri)


def test_reader_refuses_a_corrupt_or_incomplete_publication(root):
    uri = storage.join(root, "model")
    with storage.staged_dir(uri) as folder:
        _write_folder(folder, FILES)
    storage.write_bytes(storage.join(uri, "config.json"), b'{"a": 2}\n')  # same size, other bytes
    with pytest.raises(BertpipeError, match="config.json does not match its recorded checksum"):
        with storage.local_dir(uri):
            pass
    storage.write_bytes(storage.join(uri, "config.json"), FILES["config.json"])
    storage.delete(storage.join(uri, "tokenizer/vocab.txt"))
    with pytest.raises(BertpipeError, match="incomplete: tokenizer/vocab.txt is missing"):
        with storage.local_dir(uri):
            pass
    storage.delete(storage.join(uri, storage.PUBLISHED_FILE))
    with pytest.raises(BertpipeError, match="not a published folder"):
        storage.read_published(uri)


def test_folders_written_by_other_tools_are_read_as_they_are(root):
    uri = storage.join(root, "foreign")
    storage.write_bytes(storage.join(uri, "vocab.txt"), b"[PAD]\n")
    with storage.local_dir(uri) as local:
        assert (local / "vocab.txt").read_bytes() == b"[PAD]\n"
    assert not _published(uri)


def test_a_manifest_naming_paths_outside_the_folder_is_refused(root, tmp_path):
    uri = storage.join(root, "evil")
    storage.write_json(storage.join(uri, storage.PUBLISHED_FILE), {"format": 1, "files": {"../../escaped.txt": {"size": 1, "sha256": "0"}}})
    with pytest.raises(BertpipeError, match="may not contain"):
        with storage.local_dir(uri):
            pass
    assert not list(tmp_path.rglob("escaped.txt"))


def test_download_dir_copies_the_files_without_the_markers(root, tmp_path):
    with storage.staged_dir(storage.join(root, "synced")) as folder:
        _write_folder(folder, FILES)
    target = storage.download_dir(storage.join(root, "synced"), tmp_path / "target")
    assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()} == FILES


@pytest.mark.parametrize("part", ["../x", "a/../../x", "/etc/passwd", "a/./b", "..\\x"])
def test_join_refuses_parts_that_climb_out(root, part):
    if storage.is_s3(root) and part.startswith("/"):  # S3 keys have no root to climb to: it stays inside
        assert storage.join(root, part) == root + part
        return
    with pytest.raises(BertpipeError, match="may not contain"):
        storage.join(root, part)


@pytest.mark.parametrize("uri", ["s3://b/x", "s3://Bad_Bucket/x", "s3:///x", "s3://bucket/a/../x", "s3://bucket/a//x", "s3://bucket/./x"])
def test_bad_s3_uris_are_refused_before_any_request(uri):
    with pytest.raises(BertpipeError, match="S3 URI"):
        storage.split_s3(uri)


def test_large_objects_go_up_in_parts_and_come_back_whole(servers_env, monkeypatch, tmp_path):
    monkeypatch.setenv("BERTPIPE_S3_MULTIPART_MB", "5")
    data = os.urandom(11 * 1024 * 1024 + 17)
    uri = f"s3://{servers_env.bucket}/test-storage/multipart/{uuid.uuid4().hex[:8]}.bin"
    storage.write_bytes(uri, data)
    bucket, key = storage.split_s3(uri)
    etag = storage.s3_client().head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")  # an S3 multipart ETag: md5-of-parts "-" number of parts
    assert storage.read_bytes(uri) == data
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "weights.bin").write_bytes(data)
    with storage.staged_dir(uri + ".d") as folder:
        (folder / "weights.bin").write_bytes(data)
    with storage.local_dir(uri + ".d") as local:
        assert (local / "weights.bin").read_bytes() == data


def test_local_publication_writes_the_manifest_inside_the_swapped_folder(tmp_path):
    uri = str(tmp_path / "vocab")
    with storage.staged_dir(uri) as folder:
        (folder / "vocab.txt").write_text("[PAD]\n")
    manifest = json.loads((tmp_path / "vocab" / storage.PUBLISHED_FILE).read_text())
    assert manifest["files"]["vocab.txt"]["size"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]  # no staging folders left behind


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_published_files_and_folders_honour_the_umask(tmp_path, mask):
    """Another user (a reader pod, a shared volume) can read what the umask lets them: not 0600/0700 whatever it says."""
    previous = os.umask(mask)
    try:
        single = str(tmp_path / "out" / "report.json")
        storage.write_json(single, {"ok": True})
        with storage.staged_dir(str(tmp_path / "model")) as folder:
            _write_folder(folder, FILES)
        storage.download_dir(str(tmp_path / "model"), tmp_path / "copy")
    finally:
        os.umask(previous)
    file_mode, folder_mode = 0o666 & ~mask, 0o777 & ~mask
    files = [tmp_path / "out" / "report.json", *(p for p in (tmp_path / "model").rglob("*") if p.is_file()),
             *(p for p in (tmp_path / "copy").rglob("*") if p.is_file())]
    assert {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files} == {
        str(p.relative_to(tmp_path)): oct(file_mode) for p in files}
    folders = [tmp_path / "model", tmp_path / "model" / "tokenizer", tmp_path / "copy", tmp_path / "copy" / "tokenizer"]
    assert [oct(p.stat().st_mode & 0o777) for p in folders] == [oct(folder_mode)] * 4
