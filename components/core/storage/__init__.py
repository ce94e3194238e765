"""One API over local paths and s3:// URIs, so every step runs the same locally and on a cluster.

    paths.py        joining and splitting URIs so that nothing climbs out of its folder
    s3.py           the S3 client (standard AWS environment, bounded timeouts) and its one-line errors
    files.py        single files (atomic writes that honour the umask) and folder copies
    publication.py  publishing folders: files first, a sha256 manifest last; readers verify it
    writable.py     output locations checked when a step starts (a file in the way, no write access, no bucket)

Callers use the package: `from components.core import storage; storage.join(...)`.
"""

from components.core.storage.files import (
    delete, download_dir, exists, file_sizes, file_stamps, list_files, open_read, read_bytes, read_json, read_text, write_bytes, write_json,
    write_text,
)
from components.core.storage.paths import PUBLISHED_FILE, is_s3, join, split_s3
from components.core.storage.publication import local_dir, publish_dir, read_published, staged_dir
from components.core.storage.s3 import s3_client
from components.core.storage.writable import check_output

__all__ = [
    "PUBLISHED_FILE", "check_output", "delete", "download_dir", "exists", "file_sizes", "file_stamps", "is_s3", "join",
    "list_files", "local_dir", "open_read", "publish_dir", "read_bytes", "read_json", "read_published", "read_text",
    "s3_client", "split_s3", "staged_dir", "write_bytes", "write_json", "write_text",
]
