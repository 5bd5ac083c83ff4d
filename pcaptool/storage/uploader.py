"""Ship finished parts to a destination, delete each only once its copy is confirmed.

``Uploader`` runs ``jobs`` worker threads over a queue of paths, uploading each to a
``pcaptool.storage.destination.Destination``. A failed file stays on disk and is tried
again ``retry_later`` seconds on, and once more when input ends; a path that is not a
file is reported as "no such file" and forgotten. On SIGTERM (``drain()``) it takes no
new work, gives what is in hand until the drain deadline, and leaves the rest on disk,
named, for ``--sweep``.

The spool: the bytes of the parts waiting (queued, in hand, waiting for a retry) are
held under ``spool_bytes``. Beyond it the oldest waiting parts are deleted with an ERROR
naming them and the packets (or records) they held, so a storage outage longer than the
spool ends in a counted loss instead of an out-of-memory kill of the whole instance.
With ``spool_dirs`` (the sidecar's parts directory) the bytes held are every file under
them, not only the parts handed over: the part rotate is writing, finished parts compress
has not passed on yet, compress's output being written, so the bound is on what the
memory-backed directory really holds.
"""

from __future__ import annotations

import heapq
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pcaptool.errors import PcapToolError
from pcaptool.storage.destination import Destination, UploadError, UploadResult

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


def directory_bytes(directory: str) -> int:
    """Bytes of every file under DIRECTORY (temporary ones too), 0 if it is gone."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        total += directory_bytes(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:  # went away while we looked: nothing held
                    pass
    except OSError:
        pass
    return total


# ---------------------------------------------------------------- the engine


class Deadline:
    """The drain deadline (monotonic seconds), shared by the uploader and the retry
    predicate of its destination (which is built first: ``give_up=deadline.passed``)."""

    def __init__(self) -> None:
        self.at = float("inf")

    def passed(self) -> bool:
        return time.monotonic() >= self.at


class Uploader:
    """Worker threads over a path queue; failures stay on disk and are retried later."""

    def __init__(
        self,
        destination: Destination,
        on_uploaded: Callable[[UploadResult], None],
        log: Callable[..., None],
        jobs: int = 4,
        retry_later: float = 30.0,
        spool_bytes: int = 0,
        deadline: Deadline | None = None,
        spool_dirs: Iterable[str | os.PathLike] = (),
    ):
        self.destination = destination
        self.on_uploaded = on_uploaded
        self.log = log
        self.jobs = max(1, jobs)
        self.retry_later = retry_later
        self.spool_bytes = spool_bytes  # 0: no limit
        self.spool_dirs = [os.path.abspath(d) for d in spool_dirs]
        self._queue: queue.Queue[Path] = queue.Queue()
        self._retry_heap: list[tuple[float, str]] = []  # (due, path) for failed files
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # queued or in hand
        self._in_hand: set[str] = set()
        self._known: set[str] = set()  # queued, in hand, waiting for a retry, or given up
        self._untouched: set[str] = set()  # taken off the queue as SIGTERM came
        self._waiting: dict[str, int] = {}  # path -> bytes, oldest first: the spool
        self._dropped: set[str] = set()  # deleted by the spool limit, maybe still queued
        self.failed: dict[str, str] = {}  # path -> last error, while it stays on disk
        self.missing: dict[str, str] = {}  # path -> error: no such file (nothing to keep)
        self._attempts: dict[str, int] = {}  # path -> failures so far
        self.stopping = threading.Event()  # SIGTERM: take no new work
        self._finishing = False  # end of input: no more timed retries
        self.deadline = deadline or Deadline()
        self.uploaded = 0
        self.lost_parts = 0  # dropped by the spool limit
        self._threads = [
            threading.Thread(target=self._work, name=f"upload-{i}", daemon=True)
            for i in range(self.jobs)
        ]

    def give_up(self) -> bool:
        """For the retry predicate: stop retrying once the drain deadline has passed."""
        return self.deadline.passed()

    @property
    def give_up_at(self) -> float:
        return self.deadline.at

    @give_up_at.setter
    def give_up_at(self, value: float) -> None:
        self.deadline.at = value

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, path: str | os.PathLike) -> bool:
        """Queue a path (ignored when already queued, in hand or failed-and-waiting)."""
        key = os.fspath(path)
        try:
            size = os.stat(key).st_size
        except OSError:
            size = 0
        with self._lock:
            if self.stopping.is_set() or key in self._known:
                return False
            self._known.add(key)
            self._waiting[key] = size
            self._pending += 1
        self._queue.put(Path(key))
        self._enforce_spool()
        return True

    def submit_all(self, paths: Iterable[str | os.PathLike]) -> None:
        for p in paths:
            self.submit(p)

    # ------------------------------------------------------------------ the spool
    def spooled(self) -> int:
        """Bytes held: every file under ``spool_dirs``, plus waiting parts outside them."""
        on_disk = sum(directory_bytes(d) for d in self.spool_dirs)
        with self._lock:
            return on_disk + self._waiting_outside()

    def _waiting_outside(self) -> int:
        dirs = tuple(os.path.join(d, "") for d in self.spool_dirs)
        return sum(
            n for key, n in self._waiting.items() if not os.path.abspath(key).startswith(dirs)
        )

    def _enforce_spool(self) -> None:
        """Beyond ``spool_bytes``, delete the oldest waiting parts that are not in hand."""
        if self.spool_bytes <= 0:
            return
        victims = []
        on_disk = sum(directory_bytes(d) for d in self.spool_dirs)
        with self._lock:
            if self.spool_dirs:
                total = on_disk + self._waiting_outside()
            else:
                total = sum(self._waiting.values())
            for key in list(self._waiting):
                if total <= self.spool_bytes:
                    break
                if key in self._in_hand:
                    continue
                total -= self._waiting.pop(key)
                self._dropped.add(key)
                self.failed.pop(key, None)
                victims.append(key)
            if victims:
                self._retry_heap = [e for e in self._retry_heap if e[1] not in self._dropped]
                heapq.heapify(self._retry_heap)
        if victims:
            self._drop(victims, total)

    def _drop(self, victims: list[str], total: int) -> None:
        from pcaptool.storage.spool import count_lost

        lost: dict[str, int] = {}
        for key in victims:
            count, unit = count_lost(Path(key))
            lost[unit] = lost.get(unit, 0) + count
            try:
                os.unlink(key)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.log("WARNING", f"spool: could not delete {key}: {exc.strerror}")
        self.lost_parts += len(victims)
        counted = ", ".join(f"{n} {unit}" for unit, n in sorted(lost.items())) or "nothing"
        self.log(
            "ERROR",
            f"spool full ({self.spool_bytes} bytes held for upload): dropped the oldest "
            f"{len(victims)} part(s), {counted} lost: {', '.join(victims)}",
            dropped=victims,
            lost=lost,
            spool_bytes=self.spool_bytes,
            spooled=total,
        )

    # ------------------------------------------------------------------ workers
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
                    key = os.fspath(path)
                    stopping = self.stopping.is_set()
                    dropped = key in self._dropped
                    if dropped:
                        self._dropped.discard(key)
                    elif stopping:  # taken just as SIGTERM came: leave it on disk
                        self._untouched.add(key)
                    else:
                        self._in_hand.add(key)
                if dropped:
                    self._done(path, None, forget=False)
                    continue
                if stopping:
                    self._done(path, None)
                    return
            self._one(path)

    def _one(self, path: Path) -> None:
        key = os.fspath(path)
        if not path.is_file():
            self._missing(path)
            return
        try:
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
            self._waiting.pop(key, None)
            self.uploaded += 1
        self.on_uploaded(result)
        self._done(path, None)

    def _missing(self, path: Path) -> None:
        key = os.fspath(path)
        what = "not a regular file" if path.exists() else "no such file"
        with self._lock:
            self.missing[key] = what
            self.failed.pop(key, None)
            self._waiting.pop(key, None)
        self.log("ERROR", f"cannot upload {path}: {what} (not retried)", source=key, error=what)
        self._done(path, None, forget=False)

    def _failed(self, path: Path, exc: UploadError) -> None:
        key = os.fspath(path)
        if not path.exists():  # deleted while it was being uploaded
            self._missing(path)
            return
        retry = exc.transient and not self.stopping.is_set()
        with self._lock:
            self.failed[key] = str(exc)
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
            if retry_at is not None and key not in self._dropped:
                heapq.heappush(self._retry_heap, (retry_at, key))
            elif forget:
                self._known.discard(key)
                self._waiting.pop(key, None)
            self._idle.notify_all()

    # ------------------------------------------------------------------ ending
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and nothing is in hand (retries may still wait).

        Returns False at TIMEOUT, or as soon as ``stopping`` is set (SIGTERM).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending > 0:
                if self.stopping.is_set():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(min(left, 0.2) if left is not None else 0.2)
            return True

    def finish(self) -> list[str]:
        """End of input: upload what is queued, retry each failed file once more now.

        Returns the paths that were not uploaded and are still on disk (each already
        logged at ERROR). A SIGTERM meanwhile (``stopping``) ends it early.
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
            return sorted(k for k in self.failed if Path(k).exists())

    def drain(self, timeout: float) -> list[str]:
        """SIGTERM: no new work; what is in hand gets TIMEOUT seconds. Returns what is left."""
        self.give_up_at = min(self.give_up_at, time.monotonic() + timeout)
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
