"""Cloud Storage uploads that never overwrite, verify checksums and retry transient faults.

- ``make_client()`` honours ``STORAGE_EMULATOR_HOST`` (fake-gcs-server in tests) with
  anonymous credentials; otherwise Application Default Credentials.
- ``upload_file()`` sends one file with ``if_generation_match=0`` (create only), retries
  with google-cloud-storage's own predicate (429, 408, 5xx, connection errors, timeouts)
  and google-api-core's exponential backoff with jitter, then compares the server's crc32c
  and md5 with the local file's before anyone may delete the local copy.

A retry after a lost response can meet its own earlier success as "412 Precondition
Failed"; when the existing object has the same size and crc32c it *is* this file, so that
counts as done (no duplicate, no overwrite). Different content is ``ObjectExistsError``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pcaptool.errors import PcapToolError

CHUNK = 1 << 20
TRANSPORT_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for each HTTP request

CONTENT_TYPES = {
    ".pcap": "application/vnd.tcpdump.pcap",
    ".pcapng": "application/vnd.tcpdump.pcap",
    ".cap": "application/vnd.tcpdump.pcap",
    ".json": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".gz": "application/gzip",
}


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
    crc32c: str  # base64 of the big-endian CRC32C, as the JSON API reports it
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


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def emulator_endpoint(env: dict[str, str] | None = None) -> str | None:
    """STORAGE_EMULATOR_HOST as a URL (the variable may omit the scheme)."""
    env = os.environ if env is None else env
    host = env.get("STORAGE_EMULATOR_HOST")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def make_client(project: str | None = None):
    """A storage Client: the emulator with anonymous credentials, else ADC."""
    from google.cloud import storage

    endpoint = emulator_endpoint()
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or "emulator-project",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    import google.auth.exceptions

    try:
        return storage.Client(project=project)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise PcapToolError(
            "no Google credentials for Cloud Storage: run on Google Cloud, set "
            "GOOGLE_APPLICATION_CREDENTIALS, or use --dest DIR for a local directory "
            f"({exc})"
        ) from None


def make_retry(
    timeout: float = 120.0,
    initial: float = 0.5,
    maximum: float = 10.0,
    give_up: Callable[[], bool] | None = None,
):
    """google-cloud-storage's retry predicate on api-core's backoff (jittered, exponential).

    ``give_up()`` returning True stops further attempts (SIGTERM's drain deadline passed).
    """
    from google.cloud.storage.retry import DEFAULT_RETRY, _should_retry

    def predicate(exc: Exception) -> bool:
        if give_up is not None and give_up():
            return False
        return _should_retry(exc)

    return (
        DEFAULT_RETRY.with_predicate(predicate)
        .with_delay(initial=initial, maximum=maximum, multiplier=2.0)
        .with_timeout(timeout)
    )


def describe_error(exc: BaseException) -> str:
    """One line for a storage/transport error."""
    from google.api_core import exceptions as api_exceptions

    if isinstance(exc, api_exceptions.GoogleAPICallError):
        return f"{exc.code} {exc.message}".strip()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def upload_file(
    bucket,
    object_name: str,
    path: str | os.PathLike,
    retry=None,
    digest: FileDigest | None = None,
) -> UploadResult:
    """Upload PATH as OBJECT_NAME if no object has that name; verified; never overwrites.

    Raises ObjectExistsError (different content there), ChecksumMismatchError (the
    server's copy differs; it is deleted again), UploadError (anything else, transient).
    """
    from google.api_core import exceptions as api_exceptions

    retry = retry if retry is not None else make_retry()
    digest = digest or file_digest(path)
    url = f"gs://{bucket.name}/{object_name}"
    blob = bucket.blob(object_name)
    started = time.monotonic()
    try:
        blob.upload_from_filename(
            os.fspath(path),
            content_type=content_type(object_name),
            if_generation_match=0,
            checksum="crc32c",
            retry=retry,
            timeout=TRANSPORT_TIMEOUT,
        )
    except api_exceptions.PreconditionFailed:
        return _already_there(bucket, object_name, path, digest, url, started, retry)
    except Exception as exc:  # transport errors, API errors, DataCorruption
        if _is_data_corruption(exc):
            raise ChecksumMismatchError(f"{url}: checksum mismatch during upload") from exc
        raise UploadError(f"{url}: {describe_error(exc)}") from exc
    _verify(blob, digest, url)
    return UploadResult(
        source=os.fspath(path),
        url=url,
        bytes=digest.size,
        seconds=time.monotonic() - started,
        crc32c=digest.crc32c,
        generation=blob.generation,
    )


def _is_data_corruption(exc: BaseException) -> bool:
    return type(exc).__name__ == "DataCorruption"


def _already_there(bucket, object_name, path, digest, url, started, retry) -> UploadResult:
    try:
        existing = bucket.get_blob(object_name, retry=retry, timeout=TRANSPORT_TIMEOUT)
    except Exception as exc:
        raise UploadError(f"{url}: exists; could not read it back: {describe_error(exc)}") from exc
    if existing is None:  # deleted since: try again later
        raise UploadError(f"{url}: precondition failed but the object is gone")
    if existing.size != digest.size or (existing.crc32c and existing.crc32c != digest.crc32c):
        raise ObjectExistsError(
            f"{url} already exists with different content "
            f"({existing.size} bytes, crc32c {existing.crc32c}); not overwritten"
        )
    return UploadResult(
        source=os.fspath(path),
        url=url,
        bytes=digest.size,
        seconds=time.monotonic() - started,
        crc32c=digest.crc32c,
        existed=True,
        generation=existing.generation,
    )


def _verify(blob, digest: FileDigest, url: str) -> None:
    """The server's size/crc32c/md5 (from the upload response) against the local file's."""
    if blob.crc32c is None and blob.md5_hash is None:
        blob.reload(timeout=TRANSPORT_TIMEOUT)
    problems = []
    if blob.size is not None and blob.size != digest.size:
        problems.append(f"size {blob.size} != {digest.size}")
    if blob.crc32c is not None and blob.crc32c != digest.crc32c:
        problems.append(f"crc32c {blob.crc32c} != {digest.crc32c}")
    if blob.md5_hash is not None and blob.md5_hash != digest.md5:
        problems.append(f"md5 {blob.md5_hash} != {digest.md5}")
    if blob.crc32c is None and blob.md5_hash is None:
        problems.append("the server reported no checksum")
    if problems:
        # Remove exactly the generation we wrote so the retry can create it afresh.
        with contextlib.suppress(Exception):  # best effort; the error below matters
            blob.delete(if_generation_match=blob.generation, timeout=TRANSPORT_TIMEOUT)
        raise ChecksumMismatchError(f"{url}: server copy differs ({'; '.join(problems)})")
