"""The life of one `pcaptool upload` run: inputs in, stop signals, the drain, what is left.

``run_upload(plan, destination, log, on_uploaded)``:

1. ``--sweep DIR``: what an earlier run left is queued first;
2. the inputs: PATHS, ``-`` (paths on stdin, one per line), or ``--watch DIR`` (polled
   until a stop signal), read by a feeder thread so the main thread only waits;
3. end of input: every queued file is uploaded and each failed one retried once more
   (``Uploader.finish``);
4. SIGTERM/SIGINT: no new work (with ``drain_input`` the paths upstream stages still
   send on stdin are taken until it closes or the drain deadline); uploads in hand get
   ``drain_timeout`` seconds; the rest stays on disk, named, for ``--sweep``.

The outcome says what was uploaded and what is left; the command turns it into an exit
status.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pcaptool.sidecar.partfix import recover_stranded
from pcaptool.signals import StopSignals
from pcaptool.storage.destination import Destination, UploadResult
from pcaptool.storage.uploader import Deadline, Uploader, list_parts


@dataclass
class UploadPlan:
    paths: list[str] = field(default_factory=list)  # "-" = paths from stdin
    watch: Path | None = None
    sweep: Path | None = None
    glob: str = "*"
    poll: float = 0.5
    drain_timeout: float = 8.0
    drain_input: bool = False
    jobs: int = 4
    retry_later: float = 30.0
    spool_bytes: int = 0
    spool_dirs: list[Path] = field(default_factory=list)  # all they hold counts (spool)

    @property
    def reads_stdin(self) -> bool:
        return "-" in self.paths or (not self.paths and self.watch is None and self.sweep is None)


@dataclass
class UploadOutcome:
    uploaded: int
    left: list[str]  # still on disk, for --sweep
    missing: dict[str, str]  # path -> "no such file"
    signal: str | None = None  # "SIGTERM" when a stop signal ended the run
    dropped: int = 0  # parts deleted by the spool limit

    def summary(self) -> str | None:
        """One line for the error of a run that did not upload everything, else None."""
        words = []
        if self.missing:
            shown = ", ".join(f"{p}: {why}" for p, why in list(self.missing.items())[:5])
            words.append(f"{len(self.missing)} path(s) not uploaded ({shown})")
        if self.left:
            shown = ", ".join(self.left[:5]) + (", ..." if len(self.left) > 5 else "")
            words.append(
                f"{len(self.left)} file(s) not uploaded, kept on disk for "
                f"`pcaptool upload --sweep`: {shown}"
            )
        if self.dropped:
            words.append(
                f"{self.dropped} part(s) dropped by the spool limit while storage was down "
                "(each named in an ERROR line)"
            )
        return "; ".join(words) or None


def matching(paths, glob: str) -> list[Path]:
    return [Path(p) for p in paths if fnmatch.fnmatch(Path(p).name, glob)]


def _read_stdin(uploader: Uploader) -> None:
    stdin = sys.stdin.buffer
    while line := stdin.readline():
        name = os.fsdecode(line.rstrip(b"\r\n"))
        if name.strip():
            uploader.submit(name)


def _watch(uploader: Uploader, plan: UploadPlan, stop: StopSignals) -> None:
    """Poll the directory for finished parts (producers rename complete files into place)."""
    while not stop.stopping:
        for part in matching(list_parts(plan.watch), plan.glob):
            uploader.submit(part)  # already-known paths are ignored
        stop.wait(plan.poll)


def _feed(uploader: Uploader, plan: UploadPlan, stop: StopSignals, state: dict) -> None:
    try:
        _feed_inputs(uploader, plan, stop, state)
    except Exception as exc:  # a --watch directory that went away, stdin that broke
        state["error"] = exc
    finally:
        state["input_done"] = True


def _feed_inputs(uploader: Uploader, plan: UploadPlan, stop: StopSignals, state: dict) -> None:
    if plan.paths:
        for p in plan.paths:
            if stop.stopping and not state["draining_stdin"]:
                return
            if p == "-":
                _read_stdin(uploader)
            else:
                uploader.submit(p)
    elif plan.watch is not None:
        _watch(uploader, plan, stop)
    elif plan.sweep is None:
        _read_stdin(uploader)


def run_upload(
    plan: UploadPlan,
    destination: Destination,
    log: Callable[..., None],
    on_uploaded: Callable[[UploadResult], None],
    deadline: Deadline | None = None,
) -> UploadOutcome:
    """Upload every input until it ends or a stop signal; see the module's docstring."""
    uploader = Uploader(
        destination,
        on_uploaded=on_uploaded,
        log=log,
        jobs=plan.jobs,
        retry_later=plan.retry_later,
        spool_bytes=plan.spool_bytes,
        deadline=deadline,
        spool_dirs=plan.spool_dirs,
    )
    state: dict = {"draining_stdin": False, "input_done": False, "error": None}

    def on_signal(signum: int) -> None:
        if uploader.give_up_at != float("inf"):
            return  # a repeated signal changes nothing
        uploader.give_up_at = time.monotonic() + plan.drain_timeout
        if plan.drain_input and plan.reads_stdin and not state["input_done"]:
            # Pipeline mode: the stages upstream are finishing their last parts and will
            # close the pipe; keep taking their paths until EOF or the drain deadline.
            state["draining_stdin"] = True
            return
        uploader.stopping.set()

    with StopSignals(on_signal=on_signal) as stop:
        uploader.start()
        if plan.sweep is not None:
            recover_stranded(plan.sweep, log)  # sidecar/partfix: unfinished temporary parts
            uploader.submit_all(matching(list_parts(plan.sweep), plan.glob))
        feeder = threading.Thread(
            target=_feed, args=(uploader, plan, stop, state), name="upload-input", daemon=True
        )
        feeder.start()
        while feeder.is_alive() and not uploader.stopping.is_set():
            feeder.join(0.1)
            if stop.stopping and uploader.give_up():
                uploader.stopping.set()  # --drain-input: the deadline came first
        if state["error"] is not None:
            uploader.drain(plan.drain_timeout)
            raise state["error"]
        if not stop.stopping:
            left = uploader.finish()
        if stop.stopping:  # before or during finish()
            if not uploader.stopping.is_set():  # --drain-input and the input ended in time
                uploader.wait_idle(max(0.0, uploader.give_up_at - time.monotonic()))
            left = uploader.drain(max(0.0, uploader.give_up_at - time.monotonic()))
    name = signal.Signals(stop.signal).name if stop.signal is not None else None
    return UploadOutcome(uploader.uploaded, left, dict(uploader.missing), name, uploader.lost_parts)


def exit_after_signal(outcome: UploadOutcome, log: Callable[..., None]) -> None:
    """Log what a stop signal left and end the process at once with status 0.

    Uploads that outlived the drain are still running in worker threads (their files are
    on disk: deleted only after confirmation) and the input thread may be blocked in a
    read, so the process ends now rather than wait for them.
    """
    left = outcome.left
    log(
        "WARNING" if left else "NOTICE",
        f"{outcome.signal}: stopped; {len(left)} file(s) left on disk for --sweep"
        + (f": {', '.join(left)}" if left else ""),
        left=left,
        uploaded=outcome.uploaded,
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)


def object_prefix(prefix: str | None) -> tuple[str, dict]:
    """The object prefix and where it came from: --prefix, else the instance's metadata
    (PROJECT_ID/SERVICE/REGION/REVISION/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID)."""
    from pcaptool.errors import UsageError
    from pcaptool.sidecar import metadata

    if prefix is None:
        info = metadata.discover()
        prefix, where = info.prefix, info.sources
    else:
        prefix, where = prefix.strip("/"), {"prefix": "--prefix"}
    if not prefix:
        raise UsageError("--prefix must not be empty")
    return prefix, where
