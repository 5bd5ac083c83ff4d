"""`pcaptool upload`: ship finished parts to Cloud Storage or a directory, then delete them."""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity
from pcaptool.errors import PcapToolError, UsageError

DEFAULT_DEST = "/tmp/pcaptool/uploads"


class _Terminated(Exception):
    """SIGTERM arrived while the main thread was waiting for input."""


def upload(
    ctx: typer.Context,
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILES",
            help="Files to upload; '-' reads paths one per line from stdin. "
            "None: read paths from stdin (unless --watch or --sweep is given).",
            show_default=False,
        ),
    ] = None,
    bucket: Annotated[
        str | None,
        typer.Option(
            "--bucket",
            "-b",
            envvar="PCAP_GCS_BUCKET",
            help="Cloud Storage bucket (name, or gs://NAME). Objects are "
            "PROJECT_ID/SERVICE/REGION/REVISION/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID/<part>.",
            show_default=False,
        ),
    ] = None,
    dest: Annotated[
        Path | None,
        typer.Option(
            "--dest",
            envvar="GCS_MOUNT",
            help="Copy into this directory instead (a plain directory or a GCS FUSE mount), under "
            f"the same hierarchy. With neither --bucket nor --dest: {DEFAULT_DEST}.",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        Path | None,
        typer.Option(
            "--watch", help="Upload every finished part that appears in DIR until SIGTERM."
        ),
    ] = None,
    sweep: Annotated[
        Path | None,
        typer.Option(
            "--sweep",
            help="First upload what an earlier run left in DIR (with no PATHS and no --watch: "
            "then exit).",
        ),
    ] = None,
    glob: Annotated[
        str,
        typer.Option(
            "--glob", help="Only files matching this pattern in --watch/--sweep directories."
        ),
    ] = "*",
    prefix: Annotated[
        str | None,
        typer.Option(
            "--prefix",
            help="Use this object prefix instead of the metadata-derived hierarchy.",
            show_default=False,
        ),
    ] = None,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0.0,
            help="On SIGTERM, seconds to finish uploads in hand; the rest stay on disk.",
        ),
    ] = 8.0,
    drain_input: Annotated[
        bool,
        typer.Option(
            "--drain-input/--no-drain-input",
            help="On SIGTERM keep reading paths from stdin until it closes (upstream stages "
            "finishing their last parts) or --drain-timeout ends; default: take no new work.",
        ),
    ] = False,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", min=1, max=64, help="Parallel uploads."),
    ] = 4,
    retry_timeout: Annotated[
        float,
        typer.Option(
            "--retry-timeout",
            min=0.0,
            help="Seconds one upload keeps retrying transient errors (429, 5xx, timeouts, "
            "refused connections) with exponential backoff and jitter.",
        ),
    ] = 120.0,
    retry_later: Annotated[
        float,
        typer.Option(
            "--retry-later",
            min=1.0,
            help="A file that failed is tried again after SECS (doubling each time, at most "
            "600), and once more when input ends.",
        ),
    ] = 30.0,
    poll: Annotated[
        float,
        typer.Option(
            "--poll", min=0.05, help="How often --watch looks at its directory (seconds)."
        ),
    ] = 0.5,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Upload finished parts to Cloud Storage (or a directory) and delete each once confirmed.

    Objects are never overwritten (generation precondition); their crc32c/md5 are checked against the local file before it is deleted. A file that keeps failing stays on disk and is retried; --sweep DIR uploads what an earlier run left.

    Destination: --bucket (PCAP_GCS_BUCKET), else --dest DIR (GCS_MOUNT), else the local directory /tmp/pcaptool/uploads. Names: PROJECT_ID/SERVICE/REGION/REVISION/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID/<part>.

    stderr: one NOTICE line "PCAP files available at: gs://BUCKET/PREFIX" at start, one JSON line per upload. stdout: the gs:// URL (or path) of each upload. SIGTERM: no new work, uploads in hand get --drain-timeout seconds, exit 0.

    Example:

    \b
        pcaptool rotate --dir /tmp/parts < cap.pcap | pcaptool compress | pcaptool upload -b my-pcaps
        pcaptool upload --dest /tmp/out part__eth0__20250101T000000.pcap.gz
        pcaptool upload -b my-pcaps --sweep /tmp/parts --watch /tmp/parts --glob '*.gz'
    """
    set_verbosity(quiet, verbose)
    from pcaptool.sidecar import metadata
    from pcaptool.storage.uploader import (
        GcsDestination,
        LocalDestination,
        Uploader,
        list_parts,
        stderr_logger,
    )

    bucket, dest = _choose_destination(ctx, bucket, dest)
    for label, directory in (("--watch", watch), ("--sweep", sweep)):
        if directory is not None and not directory.is_dir():
            raise UsageError(f"{label} {directory}: not a directory")

    log = stderr_logger()
    if prefix is None:
        info = metadata.discover()
        prefix = info.prefix
        where = info.sources
    else:
        prefix = prefix.strip("/")
        where = {"prefix": "--prefix"}
    if not prefix:
        raise UsageError("--prefix must not be empty")

    uploader: Uploader | None = None

    def give_up() -> bool:
        return uploader is not None and uploader.give_up()

    if bucket is not None:
        destination = GcsDestination(bucket, prefix, retry_timeout=retry_timeout, give_up=give_up)
    else:
        destination = LocalDestination(dest or Path(DEFAULT_DEST), prefix)
    destination.check()

    # The exact words the README tells users to search Cloud Logging for.
    log(
        "NOTICE",
        f"PCAP files available at: {destination.location}",
        destination=destination.location,
        prefix=prefix,
        sources=where,
    )

    printer = _UrlPrinter()

    def on_uploaded(result) -> None:
        log(
            "INFO",
            f"uploaded {result.source} to {result.url}"
            + (" (already there, same content)" if result.existed else ""),
            object=result.url,
            bytes=result.bytes,
            seconds=round(result.seconds, 6),
            crc32c=result.crc32c,
            source=result.source,
        )
        printer.print(result.url)

    uploader = Uploader(
        destination, on_uploaded=on_uploaded, log=log, jobs=jobs, retry_later=retry_later
    )
    state = {"interruptible": False, "terminated": False, "stdin": False}

    def on_sigterm(signum, frame) -> None:
        if state["terminated"]:
            return
        state["terminated"] = True
        uploader.give_up_at = time.monotonic() + drain_timeout
        if drain_input and state["stdin"]:
            # Pipeline mode: the stages upstream are finishing their last parts and will
            # close the pipe; keep taking their paths until EOF or the drain deadline.
            signal.setitimer(signal.ITIMER_REAL, max(drain_timeout, 0.001))
            return
        uploader.stopping.set()
        if state["interruptible"]:
            state["interruptible"] = False
            raise _Terminated()

    def on_deadline(signum, frame) -> None:
        uploader.stopping.set()
        if state["interruptible"]:
            state["interruptible"] = False
            raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    previous_alarm = signal.signal(signal.SIGALRM, on_deadline)
    uploader.start()
    left: list[str] = []
    try:
        state["interruptible"] = True
        if sweep is not None:
            uploader.submit_all(_matching(list_parts(sweep), glob))
        if uploader.stopping.is_set():
            raise _Terminated()
        sources = list(paths or [])
        if sources:
            for p in sources:
                if p == "-":
                    state["stdin"] = True
                    _read_stdin(uploader)
                    state["stdin"] = False
                else:
                    uploader.submit(p)
        elif watch is not None:
            state["interruptible"] = False
            _watch(uploader, watch, glob, poll, lambda: state["terminated"])
            state["interruptible"] = True
        elif sweep is None:
            state["stdin"] = True
            _read_stdin(uploader)
            state["stdin"] = False
        if uploader.stopping.is_set() or (state["terminated"] and not drain_input):
            raise _Terminated()
        left = uploader.finish()
        state["interruptible"] = False
    except _Terminated:
        state["interruptible"] = False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGALRM, previous_alarm)

    if state["terminated"]:
        if uploader.stopping.is_set():  # else (--drain-input) input ended and finish() ran
            left = uploader.drain(max(0.0, uploader.give_up_at - time.monotonic()))
        log(
            "WARNING" if left else "NOTICE",
            f"SIGTERM: stopped; {len(left)} file(s) left on disk for --sweep"
            + (f": {', '.join(left)}" if left else ""),
            left=left,
            uploaded=uploader.uploaded,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        # Uploads that outlived the drain are still running in worker threads; their files
        # are on disk (deleted only after confirmation), so end now rather than wait.
        os._exit(0)
    if left:
        shown = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
        raise PcapToolError(
            f"{len(left)} file(s) not uploaded, kept on disk for `pcaptool upload --sweep`: {shown}"
        )


def _choose_destination(ctx: typer.Context, bucket: str | None, dest: Path | None):
    """--bucket and --dest on the same command line is a usage error; the command line beats
    the environment; with both from the environment (the reference sets PCAP_GCS_BUCKET and
    GCS_MOUNT, its FUSE mount of that bucket) the bucket is used through the API."""
    if bucket is not None and bucket.startswith("gs://"):
        bucket = bucket[len("gs://") :].strip("/")
        if "/" in bucket:
            raise UsageError("--bucket takes a bucket name; the object names are derived")
    if bucket == "":
        bucket = None
    if bucket is not None and dest is not None:
        from_cli = {
            # typer vendors its own click: compare the enum member by name
            name: getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
            for name in ("bucket", "dest")
        }
        if from_cli["bucket"] and from_cli["dest"]:
            raise UsageError("give either --bucket or --dest, not both")
        if from_cli["dest"]:
            bucket = None
        else:
            dest = None
    return bucket, dest


def _matching(paths, glob: str):
    return [p for p in paths if fnmatch.fnmatch(p.name, glob)]


def _read_stdin(uploader) -> None:
    stdin = sys.stdin.buffer
    while line := stdin.readline():
        name = os.fsdecode(line.rstrip(b"\r\n"))
        if name.strip():
            uploader.submit(name)


def _watch(uploader, directory: Path, glob: str, poll: float, stopped) -> None:
    """Poll DIRECTORY for finished parts (producers rename complete files into place)."""
    from pcaptool.storage.uploader import list_parts

    while not stopped():
        for part in _matching(list_parts(directory), glob):
            uploader.submit(part)  # already-known paths are ignored
        uploader.stopping.wait(poll)


class _UrlPrinter:
    """stdout gets one URL per line, flushed; a reader that went away stops the printing only."""

    def __init__(self):
        self._lock = threading.Lock()
        self._closed = False

    def print(self, url: str) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                sys.stdout.write(url + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                self._closed = True
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
