"""Ship finished parts to a destination, delete each only once its copy is confirmed.

Two destinations share one interface (``name_of``, ``check``, ``upload``):

- ``GcsDestination``: objects ``gs://BUCKET/PREFIX/<part>`` through ``pcaptool.storage.gcs``.
- ``LocalDestination``: files ``DIR/PREFIX/<part>`` (a plain directory or a GCS FUSE mount):
  copied under a hidden temporary name, fsynced, published without overwriting, read back
  and compared.

``Uploader`` runs ``jobs`` worker threads over a queue of paths. A failed file stays on
disk and is tried again ``retry_later`` seconds on, and once more when input ends. On
SIGTERM (``drain()``) it takes no new work, gives what is in hand until the drain
deadline, and leaves the rest on disk, named, for ``--sweep``.
"""

from __future__ import annotations

import errno
import heapq
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pcaptool.errors import PcapToolError
from pcaptool.storage.gcs import (
    CHUNK,
    ChecksumMismatchError,
    ObjectExistsError,
    UploadError,
    UploadResult,
    file_digest,
)

MAX_RETRY_LATER = 600.0
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


def is_finished_part(path: Path) -> bool:
    """Files another stage is still writing (hidden or temporary names) are not parts."""
    name = path.name
    return not name.startswith(".") and not name.endswith(TEMP_SUFFIXES)


def list_parts(directory: Path) -> list[Path]:
    """Finished parts directly in DIRECTORY, oldest name first (names sort by time)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise PcapToolError(f"cannot read directory {directory}: {exc.strerror}") from None
    return [p for p in entries if p.is_file() and is_finished_part(p)]


# ---------------------------------------------------------------- destinations


class GcsDestination:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        retry_timeout: float = 120.0,
        client_factory: Callable[[], object] | None = None,
        give_up: Callable[[], bool] | None = None,
    ):
        from pcaptool.storage.gcs import make_client, make_retry

        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.location = f"gs://{bucket}/{self.prefix}"
        self._factory = client_factory or make_client
        self._retry = make_retry(timeout=retry_timeout, give_up=give_up)
        self._local = threading.local()

    def name_of(self, path: Path) -> str:
        return f"{self.location}/{path.name}"

    def check(self) -> None:
        self._bucket()  # builds the client: missing credentials fail here, once

    def _bucket(self):
        # One client per worker thread: requests sessions are not shared across threads.
        bucket = getattr(self._local, "bucket", None)
        if bucket is None:
            bucket = self._factory().bucket(self.bucket_name)
            self._local.bucket = bucket
        return bucket

    def upload(self, path: Path) -> UploadResult:
        from pcaptool.storage.gcs import upload_file

        return upload_file(self._bucket(), f"{self.prefix}/{path.name}", path, retry=self._retry)


_ERRNO_WORDS = {
    errno.ENOSPC: "destination is full",
    errno.EDQUOT: "destination quota exceeded",
    errno.EROFS: "destination is read-only",
    errno.EACCES: "permission denied on the destination",
    errno.EPERM: "operation not permitted on the destination",
}


def _os_error(exc: OSError, where: Path) -> UploadError:
    words = _ERRNO_WORDS.get(exc.errno or 0, "cannot write to the destination")
    return UploadError(f"{words}: {where}: {exc.strerror or exc}")


class LocalDestination:
    def __init__(self, root: Path, prefix: str):
        self.root = Path(root)
        self.prefix = prefix.strip("/")
        self.directory = self.root / self.prefix
        self.location = os.fspath(self.directory)

    def name_of(self, path: Path) -> str:
        return os.fspath(self.directory / path.name)

    def check(self) -> None:
        """Make DIR/PREFIX; a read-only or missing-permission destination fails here, once."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        except OSError as exc:
            raise PcapToolError(
                f"{_os_error(exc, self.directory)} (local files are kept where they are)"
            ) from None

    def upload(self, path: Path) -> UploadResult:
        started = time.monotonic()
        final = self.directory / path.name
        digest = file_digest(path)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, self.directory) from None
        if final.exists():
            return self._already_there(path, final, digest, started)
        tmp = self.directory / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            self._copy(path, tmp)
            published = self._publish(tmp, final)
        except OSError as exc:
            raise _os_error(exc, final) from None
        finally:
            tmp.unlink(missing_ok=True)
        if not published:
            return self._already_there(path, final, digest, started)
        copied = file_digest(final)
        if copied != digest:
            final.unlink(missing_ok=True)
            raise ChecksumMismatchError(f"{final}: copy differs from {path}")
        return UploadResult(
            source=os.fspath(path),
            url=os.fspath(final),
            bytes=digest.size,
            seconds=time.monotonic() - started,
            crc32c=digest.crc32c,
        )

    @staticmethod
    def _copy(src: Path, tmp: Path) -> None:
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())

    def _publish(self, tmp: Path, final: Path) -> bool:
        """Give TMP the name FINAL unless FINAL exists; False when it does."""
        try:
            os.link(tmp, final)  # atomic and refuses to replace
        except FileExistsError:
            return False
        except OSError as exc:
            # GCS FUSE and some other filesystems have no hard links: check, then rename.
            no_links = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS)
            if exc.errno not in no_links:
                raise
            if final.exists():
                return False
            os.rename(tmp, final)
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return True
        try:
            os.fsync(dir_fd)
        except OSError:
            pass  # some filesystems cannot fsync a directory; the file itself is synced
        finally:
            os.close(dir_fd)
        return True

    def _already_there(self, path, final, digest, started) -> UploadResult:
        there = file_digest(final)
        if there != digest:
            raise ObjectExistsError(
                f"{final} already exists with different content ({there.size} bytes); "
                "not overwritten"
            )
        return UploadResult(
            source=os.fspath(path),
            url=os.fspath(final),
            bytes=digest.size,
            seconds=time.monotonic() - started,
            crc32c=digest.crc32c,
            existed=True,
        )


# ---------------------------------------------------------------- the engine


class Uploader:
    """Worker threads over a path queue; failures stay on disk and are retried later."""

    def __init__(
        self,
        destination,
        on_uploaded: Callable[[UploadResult], None],
        log: Callable[..., None],
        jobs: int = 4,
        retry_later: float = 30.0,
    ):
        self.destination = destination
        self.on_uploaded = on_uploaded
        self.log = log
        self.jobs = max(1, jobs)
        self.retry_later = retry_later
        self._queue: queue.Queue[Path] = queue.Queue()
        self._retry_heap: list[tuple[float, str]] = []  # (due, path) for failed files
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # queued or in hand
        self._in_hand: set[str] = set()
        self._known: set[str] = set()  # queued, in hand, waiting for a retry, or given up
        self._untouched: set[str] = set()  # taken off the queue as SIGTERM came
        self.failed: dict[str, str] = {}  # path -> last error, while it stays on disk
        self._attempts: dict[str, int] = {}  # path -> failures so far
        self.stopping = threading.Event()  # SIGTERM: take no new work
        self._finishing = False  # end of input: no more timed retries
        self.give_up_at = float("inf")  # monotonic drain deadline
        self.uploaded = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"upload-{i}", daemon=True)
            for i in range(self.jobs)
        ]

    def give_up(self) -> bool:
        """For the retry predicate: stop retrying once the drain deadline has passed."""
        return time.monotonic() >= self.give_up_at

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, path: str | os.PathLike) -> bool:
        """Queue a path (ignored when already queued, in hand or failed-and-waiting)."""
        key = os.fspath(path)
        with self._lock:
            if self.stopping.is_set() or key in self._known:
                return False
            self._known.add(key)
            self._pending += 1
        self._queue.put(Path(key))
        return True

    def submit_all(self, paths: Iterable[str | os.PathLike]) -> None:
        for p in paths:
            self.submit(p)

    def _take_due_retry(self) -> Path | None:
        with self._lock:
            if self._finishing:  # finish() makes the one last pass itself
                return None
            if self._retry_heap and self._retry_heap[0][0] <= time.monotonic():
                _, key = heapq.heappop(self._retry_heap)
                self._pending += 1
                self._in_hand.add(key)
                return Path(key)
        return None

    def _work(self) -> None:
        while not self.stopping.is_set():
            path = self._take_due_retry()
            if path is None:
                try:
                    path = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                with self._lock:
                    # Checked under the lock drain() takes, so every path is counted once.
                    stopping = self.stopping.is_set()
                    if stopping:  # taken just as SIGTERM came: leave it on disk
                        self._untouched.add(os.fspath(path))
                    else:
                        self._in_hand.add(os.fspath(path))
                if stopping:
                    self._done(path, None)
                    return
            self._one(path)

    def _one(self, path: Path) -> None:
        key = os.fspath(path)
        try:
            if not path.is_file():
                raise UploadError(f"{path}: no such file")
            result = self.destination.upload(path)
        except UploadError as exc:
            self._failed(path, exc)
            return
        except Exception as exc:  # a bug or an unexpected library error: keep the file
            self._failed(path, UploadError(f"{path}: {type(exc).__name__}: {exc}"))
            return
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.log("WARNING", f"uploaded but could not delete {path}: {exc.strerror}")
        with self._lock:
            self.failed.pop(key, None)
            self._attempts.pop(key, None)
            self.uploaded += 1
        self.on_uploaded(result)
        self._done(path, None)

    def _failed(self, path: Path, exc: UploadError) -> None:
        key = os.fspath(path)
        missing = not path.exists()
        with self._lock:
            self.failed[key] = str(exc)
        retry = exc.transient and not missing and not self.stopping.is_set()
        with self._lock:
            attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        # Each further failure of the same file waits twice as long, up to 10 minutes.
        delay = min(self.retry_later * 2 ** (attempts - 1), MAX_RETRY_LATER)
        when = f"retrying in {delay:g} s" if retry else "not retried"
        self.log(
            "ERROR",
            f"upload failed, {path} stays on disk ({when}): {exc}",
            source=key,
            error=type(exc).__name__,
        )
        # A file given up on stays "known" so --watch does not offer it again every poll.
        self._done(path, time.monotonic() + delay if retry else None, forget=False)

    def _done(self, path: Path, retry_at: float | None, forget: bool = True) -> None:
        key = os.fspath(path)
        with self._lock:
            self._in_hand.discard(key)
            self._pending -= 1
            if retry_at is not None:
                heapq.heappush(self._retry_heap, (retry_at, key))
            elif forget:
                self._known.discard(key)
            self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and nothing is in hand (retries may still wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left if left is not None else 0.5)
            return True

    def finish(self) -> list[str]:
        """End of input: upload what is queued, retry each failed file once more now.

        Returns the paths that were not uploaded (each already logged at ERROR).
        """
        with self._lock:
            self._finishing = True
        self.wait_idle()
        with self._lock:
            again = [key for _, key in sorted(self._retry_heap)]
            self._retry_heap.clear()
            for key in again:
                self._known.discard(key)
        for key in again:
            if Path(key).exists():
                self.submit(key)
        self.wait_idle()
        with self._lock:
            self._retry_heap.clear()  # the last pass is over
            return sorted(self.failed)

    def drain(self, timeout: float) -> list[str]:
        """SIGTERM: no new work; what is in hand gets TIMEOUT seconds. Returns what is left."""
        self.give_up_at = time.monotonic() + timeout
        self.stopping.set()
        deadline = self.give_up_at
        with self._lock:
            while self._in_hand and time.monotonic() < deadline:
                self._idle.wait(max(0.0, min(0.2, deadline - time.monotonic())))
            in_hand = sorted(self._in_hand)
            waiting = [key for _, key in self._retry_heap]
            waiting += [*self.failed, *self._untouched]
        queued = []
        while True:
            try:
                queued.append(os.fspath(self._queue.get_nowait()))
            except queue.Empty:
                break
        left = sorted(set(in_hand) | set(waiting) | set(queued))
        return [k for k in left if Path(k).exists()]


def stderr_logger(stream=None) -> Callable[..., None]:
    """One JSON object per line with ``severity`` and ``message`` (Cloud Logging's keys)."""
    import orjson

    from pcaptool.verbosity import should_log

    out = stream or sys.stderr
    lock = threading.Lock()

    def log(severity: str, message: str, **fields) -> None:
        if not should_log(severity):
            return
        line = orjson.dumps({"severity": severity, "message": message, **fields}).decode()
        with lock:
            try:
                out.write(line + "\n")
                out.flush()
            except (BrokenPipeError, ValueError):
                pass

    return log
