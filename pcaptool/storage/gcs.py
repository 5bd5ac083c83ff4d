"""Cloud Storage: the one client factory, and uploads that never overwrite, verify checksums
and retry transient faults.

- ``make_client()`` honours ``STORAGE_EMULATOR_HOST`` (fake-gcs-server in tests) with
  anonymous credentials; otherwise Application Default Credentials. ``merge gs://...``
  (``pcaptool.storage.fetch``) and ``upload`` both use it.
- ``upload_file()`` sends one file with ``if_generation_match=0`` (create only), retries
  with google-cloud-storage's own predicate (429, 408, 5xx, connection errors, timeouts)
  and google-api-core's exponential backoff with jitter, then compares the server's crc32c
  and md5 with the local file's before anyone may delete the local copy.
- ``GcsDestination``: the ``pcaptool.storage.destination`` interface over these.

A retry after a lost response can meet its own earlier success as "412 Precondition
Failed"; when the existing object has the same size and crc32c it *is* this file, so that
counts as done (no duplicate, no overwrite). Different content is ``ObjectExistsError``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pcaptool.errors import PcapToolError, UsageError
from pcaptool.storage.destination import (
    ChecksumMismatchError,
    FileDigest,
    ObjectExistsError,
    UploadError,
    UploadResult,
    file_digest,
)

TRANSPORT_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds for each HTTP request
EMULATOR_PROJECT = "pcaptool"

CONTENT_TYPES = {
    ".pcap": "application/vnd.tcpdump.pcap",
    ".pcapng": "application/vnd.tcpdump.pcap",
    ".cap": "application/vnd.tcpdump.pcap",
    ".json": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".gz": "application/gzip",
}
_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")


def bucket_name_problem(name: str) -> str | None:
    """Why NAME cannot be a Cloud Storage bucket name, or None.

    The naming rules: https://cloud.google.com/storage/docs/buckets#naming
    """
    if not _BUCKET_CHARS.fullmatch(name):
        return (
            "only lowercase letters, digits, '-', '_' and '.', starting and ending with a "
            "letter or digit"
        )
    if "." not in name and not 3 <= len(name) <= 63:
        return "3 to 63 characters"
    if len(name) > 222 or any(not 1 <= len(part) <= 63 for part in name.split(".")):
        return "at most 222 characters, each dot-separated part 1 to 63"
    with contextlib.suppress(ValueError):
        ipaddress.IPv4Address(name)
        return "not an IP address"
    if name.startswith("goog") or "google" in name or "g00gle" in name:
        return "must not begin with 'goog' or contain 'google'"
    return None


def parse_bucket(value: str) -> str:
    """``NAME`` or ``gs://NAME`` -> NAME, refused up front when it cannot be a bucket."""
    name = value[len("gs://") :].strip("/") if value.startswith("gs://") else value
    if "/" in name:
        raise UsageError("--bucket takes a bucket name; the object names are derived")
    problem = bucket_name_problem(name)
    if problem:
        raise UsageError(f"--bucket {value!r} is not a Cloud Storage bucket name ({problem})")
    return name


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
    """The storage Client of every command: the emulator with anonymous credentials, else ADC.

    Missing or unusable credentials are one line naming the fixes.
    """
    from google.cloud import storage

    from pcaptool.sidecar import selfport

    endpoint = emulator_endpoint()
    ports = selfport.configured()
    try:
        if ports is not None:
            return _self_port_client(storage, endpoint, project, ports)
        if endpoint:
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(
                project=project or os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT,
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": endpoint},
            )
        return storage.Client(project=project)
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and kin
        raise PcapToolError(
            f"no Google credentials for Cloud Storage ({_first_line(exc)}): run on Google "
            "Cloud, run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS, or upload with --dest DIR to a directory"
        ) from None


def _self_port_client(storage, endpoint: str | None, project: str | None, ports):
    """A Client whose every connection (API, token refresh, ADC's metadata probe) leaves
    from the reserved PCAP_SELF_PORTS range, which the capture filter excludes."""
    import google.auth
    import requests
    from google.auth.transport.requests import AuthorizedSession, Request

    from pcaptool.sidecar import selfport

    auth_request = Request(selfport.mount(requests.Session(), ports))
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
        options = {"api_endpoint": endpoint}
    else:
        credentials, found = google.auth.default(scopes=storage.Client.SCOPE, request=auth_request)
        project = project or found
        options = None
    session = selfport.mount(AuthorizedSession(credentials, auth_request=auth_request), ports)
    return storage.Client(
        project=project, credentials=credentials, _http=session, client_options=options
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    return f"{type(exc).__name__}: {_first_line(exc)}"


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


class GcsDestination:
    """Objects ``gs://BUCKET/PREFIX/<part>`` (the ``Destination`` interface)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        retry_timeout: float = 120.0,
        client_factory: Callable[[], object] | None = None,
        give_up: Callable[[], bool] | None = None,
    ):
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.location = f"gs://{bucket}/{self.prefix}"
        self._factory = client_factory or make_client
        self._retry = make_retry(timeout=retry_timeout, give_up=give_up)
        self._local = threading.local()

    def name_of(self, path: Path) -> str:
        return f"{self.location}/{path.name}"

    def check(self, probe: bool = False) -> None:
        """Build the client (missing credentials fail here, once); ``probe``: ask the bucket
        whether these credentials may create objects in it."""
        bucket = self._bucket()
        if probe:
            check_bucket(bucket)

    def _bucket(self):
        # One client per worker thread: requests sessions are not shared across threads.
        bucket = getattr(self._local, "bucket", None)
        if bucket is None:
            bucket = self._factory().bucket(self.bucket_name)
            self._local.bucket = bucket
        return bucket

    def upload(self, path: Path) -> UploadResult:
        return upload_file(self._bucket(), f"{self.prefix}/{path.name}", path, retry=self._retry)


def check_bucket(bucket, timeout: float = 15.0) -> None:
    """One line when BUCKET does not exist or these credentials may not create objects."""
    from google.api_core import exceptions as api_exceptions

    url = f"gs://{bucket.name}"
    retry = make_retry(timeout=timeout)
    try:
        allowed = bucket.test_iam_permissions(
            ["storage.objects.create"], retry=retry, timeout=TRANSPORT_TIMEOUT
        )
    except api_exceptions.NotFound:
        allowed = None  # no such bucket, or a server (the emulator) without IAM
    except api_exceptions.Forbidden as exc:
        raise PcapToolError(f"{url}: access denied: {describe_error(exc)}") from None
    except Exception as exc:
        raise PcapToolError(f"{url}: cannot reach Cloud Storage: {describe_error(exc)}") from None
    if allowed is None:
        try:
            exists = bucket.exists(retry=retry, timeout=TRANSPORT_TIMEOUT)
        except Exception as exc:
            raise PcapToolError(f"{url}: {describe_error(exc)}") from None
        if not exists:
            raise PcapToolError(f"{url}: no such bucket")
    elif "storage.objects.create" not in allowed:
        raise PcapToolError(
            f"{url}: these credentials may not create objects (storage.objects.create)"
        )
