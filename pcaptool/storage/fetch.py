"""List and download Cloud Storage parts into a local cache, for `pcaptool merge`.

`gs://BUCKET/PREFIX` names every object under the folder PREFIX (or the object PREFIX
itself); `gs://BUCKET/PREFIX/*.pcap.gz` filters names with shell-style wildcards.
Downloads run in parallel threads into CACHE/BUCKET/OBJECT; an object already cached with
the same size and checksum (CRC32C, else MD5, from the object's metadata) is not fetched
again, so a rerun is instant. With STORAGE_EMULATOR_HOST set (fake-gcs-server, the
emulator) the client uses anonymous credentials, as Google's own tools do.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pcaptool import fsmode
from pcaptool.errors import PcapToolError, UsageError
from pcaptool.storage.gcs import make_client

GLOB_CHARS = "*?["
READ_CHUNK = 1 << 20


@dataclass
class GcsObject:
    bucket: str
    name: str
    size: int
    crc32c: str | None  # base64 of the big-endian CRC32C, as the JSON API gives it
    md5: str | None  # base64
    updated: datetime | None
    generation: int | None

    @property
    def url(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


@dataclass
class FetchStats:
    downloaded: int = 0
    downloaded_bytes: int = 0
    cached: int = 0


def parse_url(url: str) -> tuple[str, str]:
    """gs://BUCKET/PREFIX -> (bucket, prefix)."""
    if not url.startswith("gs://"):
        raise UsageError(f"{url}: not a gs:// URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise UsageError(f"{url}: no bucket name")
    return bucket, prefix


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pcaptool" / "gcs"


def _retry(timeout: float):
    """The library's default retry (backoff on 429/5xx/connection errors), within TIMEOUT."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_timeout(timeout)


def list_objects(
    url: str,
    suffixes: tuple[str, ...],
    client=None,
    timeout: float = 60.0,
    page_size: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[GcsObject]:
    """Every part under gs://BUCKET/PREFIX (all pages), in name order.

    An object whose name cannot be a file under the cache (``..``, an absolute name, a NUL,
    a component over 255 bytes: see ``unsafe_name``) is skipped with ``warn()`` (default:
    a line on stderr); the others are merged.
    """
    warn = warn or _warn
    bucket, prefix = parse_url(url)
    client = client or make_client()
    pattern = None
    folder = prefix
    if any(c in prefix for c in GLOB_CHARS):
        pattern = prefix
        prefix = prefix[: min(prefix.find(c) for c in GLOB_CHARS if c in prefix)]
    elif prefix and not prefix.endswith("/"):
        folder = prefix + "/"
    found = []
    with _gcs_errors(url):
        blobs = client.list_blobs(
            bucket,
            prefix=prefix,
            page_size=page_size,
            timeout=min(timeout, 60.0),
            retry=_retry(timeout),
        )
        for blob in blobs:
            name = blob.name
            if pattern is not None:
                if not fnmatch.fnmatchcase(name, pattern):
                    continue
            elif name != prefix and not name.startswith(folder):
                continue  # gs://b/run1 is the folder run1/, not run10/
            elif name == prefix and name.endswith("/"):
                continue
            if name != prefix and not name.endswith(suffixes):
                continue  # not a part (a folder placeholder, a README, ...)
            problem = unsafe_name(name)
            if problem:
                warn(f"gs://{bucket}/{name!r}: {problem}; skipped this object")
                continue
            found.append(
                GcsObject(
                    bucket,
                    name,
                    int(blob.size or 0),
                    blob.crc32c,
                    blob.md5_hash,
                    blob.updated,
                    blob.generation,
                )
            )
    if not found:
        raise PcapToolError(f"{url}: no parts under this prefix")
    return sorted(found, key=lambda o: o.name)


NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 4096


def unsafe_name(name: str) -> str | None:
    """Why an object NAME cannot safely be the file CACHE/BUCKET/NAME, or None.

    Object names are any UTF-8 up to 1024 bytes: a hostile writer to the bucket can pick
    ``../../.bashrc``, ``/etc/x``, a NUL, a control character or a component too long for
    the filesystem. Each of those is refused rather than resolved.
    """
    if "\0" in name:
        return "object name contains a NUL byte"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "object name contains a control character"
    if name.startswith("/"):
        return "absolute object name"
    parts = name.split("/")
    if ".." in parts:
        return "object name climbs out of its folder (..)"
    if any(p in ("", ".") for p in parts):
        return "object name has an empty or '.' path component"
    encoded = [len(os.fsencode(p)) for p in parts]
    if max(encoded) > NAME_MAX or sum(encoded) + len(parts) > PATH_MAX // 2:
        return f"object name is too long for a file name ({max(encoded)} bytes in one part)"
    return None


def _warn(message: str) -> None:
    print(f"pcaptool: warning: {message}", file=sys.stderr, flush=True)


def cache_path(cache_dir: Path, obj: GcsObject) -> Path:
    problem = unsafe_name(obj.name)
    if problem:
        raise PcapToolError(f"{obj.url!r}: {problem}: cannot be stored as a cache file")
    return cache_dir / obj.bucket / Path(*obj.name.split("/"))


def is_cached(path: Path, obj: GcsObject) -> bool:
    """The cached file has the object's size and checksum (CRC32C, else MD5).

    A verified file gets a note beside it (`.NAME.verified`: its size, mtime and the
    object's checksums); while the file's size and mtime still match the note and the
    object's checksums equal the noted ones, the file is not read again, so a rerun over
    gigabytes of cached parts starts at once.
    """
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != obj.size:
        return False
    if obj.crc32c is None and obj.md5 is None:
        return True
    note = _note_path(path)
    try:
        noted = json.loads(note.read_text())
        if noted == _note(st, obj):
            return True
    except (OSError, ValueError):
        pass
    hasher = _Hasher(obj)
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            hasher.update(chunk)
    if not hasher.matches():
        return False
    _write_note(path, obj)
    return True


def _note_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _note(st: os.stat_result, obj: GcsObject) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "crc32c": obj.crc32c, "md5": obj.md5}


def _write_note(path: Path, obj: GcsObject) -> None:
    with contextlib.suppress(OSError):  # a cache that cannot take notes still works
        _note_path(path).write_text(json.dumps(_note(path.stat(), obj)))


class _Hasher:
    def __init__(self, obj: GcsObject) -> None:
        self.obj = obj
        if obj.crc32c is not None:
            import google_crc32c

            self._h = google_crc32c.Checksum()
            self._want = base64.b64decode(obj.crc32c)
        else:
            self._h = hashlib.md5(usedforsecurity=False)
            self._want = base64.b64decode(obj.md5 or "")

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def matches(self) -> bool:
        return self._h.digest() == self._want


class _Sink:
    """A file to download into that hashes what passes and reports progress."""

    def __init__(self, f, hasher: _Hasher, advance: Callable[[int], None]) -> None:
        self._f, self._hasher, self._advance = f, hasher, advance

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self._hasher.update(data)
        self._advance(len(data))
        return len(data)

    def flush(self) -> None:
        self._f.flush()


def fetch(
    objects: list[GcsObject],
    cache_dir: Path,
    jobs: int = 8,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> tuple[list[Path], FetchStats]:
    """Make every object a local file in CACHE_DIR; returns their paths (same order)."""
    paths = [cache_path(cache_dir, o) for o in objects]
    stats = FetchStats()
    todo = []
    for obj, path in zip(objects, paths, strict=True):
        if is_cached(path, obj):
            stats.cached += 1
        else:
            todo.append((obj, path))
    if not todo:
        return paths, stats
    if progress is None:
        progress = sys.stderr.isatty()
    local = threading.local()

    def client():
        if not hasattr(local, "client"):
            local.client = make_client()
        return local.client

    bar = _Bar(len(todo), sum(o.size for o, _ in todo)) if progress else None
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(_download, client, o, p, bar, timeout) for o, p in todo]
            try:
                for fut in futures:
                    stats.downloaded_bytes += fut.result()
                    stats.downloaded += 1
            except BaseException:
                # the first failure (or Ctrl-C) ends the run: do not start the others
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        if bar:
            bar.stop()
    return paths, stats


def _download(client_fn, obj: GcsObject, path: Path, bar: _Bar | None, timeout: float) -> int:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.download")
    try:
        fsmode.make_dirs(path.parent)
        f = fsmode.create(tmp, exclusive=False)
    except OSError as exc:
        raise PcapToolError(
            f"cannot write the cache {path.parent}: {exc.strerror}; choose one with --cache-dir"
        ) from None
    hasher = _Hasher(obj)
    advance = bar.advance if bar else (lambda n: None)
    try:
        with _gcs_errors(obj.url), f:
            blob = client_fn().bucket(obj.bucket).blob(obj.name, generation=obj.generation)
            # raw_download: the stored bytes (a gzip part stays gzip, whatever its
            # Content-Encoding), which is what the checksum in the metadata covers.
            blob.download_to_file(
                _Sink(f, hasher, advance),
                raw_download=True,
                checksum=None,
                timeout=min(timeout, 60.0),
                retry=_retry(timeout),
            )
        size = tmp.stat().st_size
        if size != obj.size or ((obj.crc32c or obj.md5) and not hasher.matches()):
            raise PcapToolError(
                f"{obj.url}: download does not match the object's size/checksum; try again"
            )
        os.replace(tmp, path)
        _write_note(path, obj)
    finally:
        tmp.unlink(missing_ok=True)
    if bar:
        bar.file_done()
    return size


class _Bar:
    """A rich progress bar on stderr: files done and bytes."""

    def __init__(self, files: int, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.files, self.done = files, 0
        self._lock = threading.Lock()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(self._label(), total=total)
        self._progress.start()

    def _label(self) -> str:
        return f"download {self.done}/{self.files} files"

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def file_done(self) -> None:
        with self._lock:
            self.done += 1
            self._progress.update(self._task, description=self._label())

    def stop(self) -> None:
        self._progress.stop()


class _gcs_errors:  # noqa: N801 - used as a context manager, reads like a statement
    """Map the client's exceptions to one line: missing bucket, no permission, no network."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, etype, exc, tb) -> bool:
        if exc is None or isinstance(exc, PcapToolError):
            return False
        from google.api_core import exceptions as gexc

        bucket = self.url[5:].split("/", 1)[0]
        if isinstance(exc, gexc.RetryError):
            # retries ran out: say what the last attempt met (usually no connection)
            cause = _one_line(exc.cause or exc)
            errno = re.search(r"\[Errno -?\d+\] ([^\"'\])]+)", cause)
            raise PcapToolError(
                f"{self.url}: cannot reach Cloud Storage: {errno.group(1) if errno else cause}"
            ) from None
        if isinstance(exc, gexc.NotFound):
            if "bucket" in str(exc).lower() or "/o/" not in str(exc):
                raise PcapToolError(f"gs://{bucket}: bucket not found") from None
            raise PcapToolError(f"{self.url}: object not found") from None
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            raise PcapToolError(
                f"{self.url}: permission denied ({_one_line(getattr(exc, 'message', exc))}); "
                "the account needs "
                "storage.objects.list and storage.objects.get on the bucket"
            ) from None
        if isinstance(exc, gexc.GoogleAPIError):
            raise PcapToolError(
                f"{self.url}: Cloud Storage error: {_one_line(getattr(exc, 'message', exc))}"
            ) from None
        if isinstance(exc, OSError) or type(exc).__module__.startswith(
            ("requests", "urllib3", "google.auth")
        ):
            raise PcapToolError(
                f"{self.url}: cannot reach Cloud Storage: {_one_line(exc)}"
            ) from None
        return False


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")
