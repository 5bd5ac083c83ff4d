"""What every upload destination shares: the interface, the result, the errors, the digest.

A destination is an object with

- ``location``: where parts go, for people (``gs://BUCKET/PREFIX``, ``/mnt/pcap/PREFIX``);
- ``name_of(path)``: the URL or path one part will get;
- ``check(probe=False)``: fail now, with one line, if nothing could ever be written (no
  credentials, no such bucket, a read-only or unwritable directory); ``probe`` also
  writes and removes a small hidden file where the destination allows that;
- ``upload(path) -> UploadResult``: copy one file, never overwriting different content,
  verified against ``file_digest(path)`` before the caller may delete the local file;
  raises ``UploadError`` (``transient``: worth retrying) and its kin.

Implementations: ``pcaptool.storage.local.LocalDestination`` (a directory or a GCS FUSE
mount) and ``pcaptool.storage.gcs.GcsDestination`` (the Cloud Storage JSON API). A new
destination (S3, say) is one new module with one such class, plus a line in
``open_destination``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pcaptool.errors import PcapToolError

CHUNK = 1 << 20


class UploadError(PcapToolError):
    """An upload that did not complete; the local file stays. ``transient``: worth retrying."""

    transient = True


class ObjectExistsError(UploadError):
    """The destination name holds different content; it is never overwritten."""

    transient = False


class ChecksumMismatchError(UploadError):
    transient = True


@dataclass(frozen=True)
class FileDigest:
    size: int
    crc32c: str  # base64 of the big-endian CRC32C, as the Cloud Storage JSON API reports it
    md5: str  # base64 of the MD5 digest


@dataclass(frozen=True)
class UploadResult:
    source: str
    url: str  # gs://bucket/object or the destination path
    bytes: int
    seconds: float
    crc32c: str
    existed: bool = False  # the same content was already there (a retried or swept upload)
    generation: int | None = None


class Destination(Protocol):
    location: str

    def name_of(self, path: Path) -> str: ...

    def check(self, probe: bool = False) -> None: ...

    def upload(self, path: Path) -> UploadResult: ...


def file_digest(path: str | os.PathLike) -> FileDigest:
    """Size, crc32c and md5 of a file, read in 1 MiB chunks (bounded memory)."""
    import google_crc32c

    crc = google_crc32c.Checksum()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return FileDigest(size, _b64(crc.digest()), _b64(md5.digest()))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def open_destination(
    bucket: str | None,
    directory: Path | None,
    prefix: str,
    retry_timeout: float = 120.0,
    give_up: Callable[[], bool] | None = None,
) -> Destination:
    """The destination for --bucket NAME or --dest DIR (exactly one of them is given)."""
    if bucket is not None:
        from pcaptool.storage.gcs import GcsDestination

        return GcsDestination(bucket, prefix, retry_timeout=retry_timeout, give_up=give_up)
    if directory is not None:
        from pcaptool.storage.local import LocalDestination

        return LocalDestination(directory, prefix)
    raise PcapToolError("no destination: give --bucket NAME or --dest DIR")
