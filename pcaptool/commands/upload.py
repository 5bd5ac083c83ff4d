"""`pcaptool upload`: ship finished parts to Cloud Storage or a directory, then delete them."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity
from pcaptool.errors import PcapToolError, UsageError
from pcaptool.log import Logger
from pcaptool.stdio import silence_stdout
from pcaptool.storage import spool
from pcaptool.storage.destination import open_destination
from pcaptool.storage.gcs import parse_bucket

# upload's options
Paths = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="FILES",
        help="Files to upload; '-' reads paths one per line from stdin. "
        "None: read paths from stdin (unless --watch or --sweep is given).",
        show_default=False,
    ),
]
Bucket = Annotated[
    str | None,
    typer.Option(
        "--bucket",
        "-b",
        envvar="PCAP_GCS_BUCKET",
        help="Cloud Storage bucket (name, or gs://NAME). Objects are "
        "PROJECT_ID/SERVICE/REGION/REVISION/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID/<part>.",
        show_default=False,
    ),
]
Dest = Annotated[
    Path | None,
    typer.Option(
        "--dest",
        envvar="GCS_MOUNT",
        help="Copy into this directory instead (a plain directory or a GCS FUSE mount), under "
        "the same hierarchy. One of --bucket and --dest is required.",
        show_default=False,
    ),
]
Watch = Annotated[
    Path | None,
    typer.Option("--watch", help="Upload every finished part that appears in DIR until SIGTERM."),
]
Sweep = Annotated[
    Path | None,
    typer.Option(
        "--sweep",
        help="First upload what an earlier run left in DIR (with no PATHS and no --watch: "
        "then exit).",
    ),
]
Glob = Annotated[
    str,
    typer.Option("--glob", help="Only files matching this pattern in --watch/--sweep directories."),
]
Prefix = Annotated[
    str | None,
    typer.Option(
        "--prefix",
        help="Use this object prefix instead of the metadata-derived hierarchy.",
        show_default=False,
    ),
]
DrainTimeout = Annotated[
    float,
    typer.Option(
        "--drain-timeout",
        min=0.0,
        help="On SIGTERM, seconds to finish uploads in hand; the rest stay on disk.",
    ),
]
DrainInput = Annotated[
    bool,
    typer.Option(
        "--drain-input/--no-drain-input",
        help="On SIGTERM keep reading paths from stdin until it closes (upstream stages "
        "finishing their last parts) or --drain-timeout ends; default: take no new work.",
    ),
]
Jobs = Annotated[
    int,
    typer.Option("--jobs", "-j", min=1, max=64, help="Parallel uploads."),
]
RetryTimeout = Annotated[
    float,
    typer.Option(
        "--retry-timeout",
        min=0.0,
        help="Seconds one upload keeps retrying transient errors (429, 5xx, timeouts, "
        "refused connections) with exponential backoff and jitter.",
    ),
]
RetryLater = Annotated[
    float,
    typer.Option(
        "--retry-later",
        min=1.0,
        help="A file that failed is tried again after SECS (doubling each time, at most "
        "600), and once more when input ends.",
    ),
]
Poll = Annotated[
    float,
    typer.Option("--poll", min=0.05, help="How often --watch looks at its directory (seconds)."),
]
SpoolBytes = Annotated[
    str | None,
    typer.Option(
        "--spool-bytes",
        envvar="PCAP_SPOOL_BYTES",
        metavar="SIZE",
        help="Parts waiting for upload are held under SIZE bytes (e.g. 256M); beyond it "
        "the oldest are dropped with an ERROR counting the packets lost. Default: a "
        "quarter of the container's memory limit (cgroup). 0: no limit.",
        show_default=False,
    ),
]
SpoolDir = Annotated[
    list[Path] | None,
    typer.Option(
        "--spool-dir",
        envvar="PCAP_SPOOL_DIR",
        metavar="DIR",
        help="Count every file under DIR against --spool-bytes, not only the parts "
        "handed to upload (the sidecar's parts directory: the part being written, "
        "parts not compressed yet). Repeatable.",
        show_default=False,
    ),
]
Check = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Only check that the destination can take files (credentials, bucket, a "
        "writable directory), then exit: 0, or 1 with one line saying why not.",
    ),
]


def upload(
    ctx: typer.Context,
    paths: Paths = None,
    bucket: Bucket = None,
    dest: Dest = None,
    watch: Watch = None,
    sweep: Sweep = None,
    glob: Glob = "*",
    prefix: Prefix = None,
    drain_timeout: DrainTimeout = 8.0,
    drain_input: DrainInput = False,
    jobs: Jobs = 4,
    retry_timeout: RetryTimeout = 120.0,
    retry_later: RetryLater = 30.0,
    poll: Poll = 0.5,
    spool_bytes: SpoolBytes = None,
    spool_dir: SpoolDir = None,
    check: Check = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Upload finished parts to Cloud Storage (or a directory) and delete each once confirmed.

    Objects are never overwritten (generation precondition); their crc32c/md5 are checked against the local file before it is deleted. A file that keeps failing stays on disk and is retried; --sweep DIR uploads what an earlier run left.

    Destination (required): --bucket (PCAP_GCS_BUCKET), else --dest DIR (GCS_MOUNT). Names: PROJECT_ID/SERVICE/REGION/REVISION/INSTANCE_STARTUP_TIMESTAMP/INSTANCE_ID/<part>.

    stderr: one NOTICE line "PCAP files available at: gs://BUCKET/PREFIX" at start, one JSON line per upload. stdout: the gs:// URL (or path) of each upload. SIGTERM: no new work, uploads in hand get --drain-timeout seconds, exit 0.

    Example:

    \b
        pcaptool rotate --dir /tmp/parts < cap.pcap | pcaptool compress | pcaptool upload -b my-pcaps
        pcaptool upload --dest /tmp/out part__eth0__20250101T000000.pcap.gz
        pcaptool upload -b my-pcaps --sweep /tmp/parts --watch /tmp/parts --glob '*.gz'

        pcaptool upload --dest /mnt/pcap --check
    """
    set_verbosity(quiet, verbose)
    from pcaptool.storage import drain

    bucket, dest = _choose_destination(ctx, bucket, dest)
    for label, directory in (("--watch", watch), ("--sweep", sweep)):
        if directory is not None and not directory.is_dir():
            raise UsageError(f"{label} {directory}: not a directory")
    log = Logger()
    prefix, where = drain.object_prefix(prefix)
    deadline = drain.Deadline()  # SIGTERM's: retries of uploads in hand stop there
    destination = open_destination(bucket, dest, prefix, retry_timeout, give_up=deadline.passed)
    limit, limit_from = spool.spool_bytes(spool_bytes)  # a bad setting fails --check too
    destination.check(probe=check)
    if check:
        log(
            "NOTICE", f"destination ready: {destination.location}", destination=destination.location
        )
        return
    # The exact words the README tells users to search Cloud Logging for.
    log(
        "NOTICE",
        f"PCAP files available at: {destination.location}",
        destination=destination.location,
        prefix=prefix,
        sources=where,
        spool_bytes=limit,
        spool_from=limit_from,
    )
    printer = _UrlPrinter()
    plan = drain.UploadPlan(
        paths=list(paths or []), watch=watch, sweep=sweep, glob=glob, poll=poll,
        drain_timeout=drain_timeout, drain_input=drain_input, jobs=jobs,
        retry_later=retry_later, spool_bytes=limit, spool_dirs=list(spool_dir or []),
    )  # fmt: skip
    outcome = drain.run_upload(plan, destination, log, printer.uploaded(log), deadline)
    if outcome.signal is not None:
        drain.exit_after_signal(outcome, log)
    problem = outcome.summary()
    if problem:
        raise PcapToolError(problem)


def _choose_destination(ctx: typer.Context, bucket: str | None, dest: Path | None):
    """--bucket and --dest on the same command line is a usage error; the command line beats
    the environment; with both from the environment (the reference sets PCAP_GCS_BUCKET and
    GCS_MOUNT, its FUSE mount of that bucket) the bucket is used through the API. Neither is
    a usage error: parts never go silently to some default directory."""
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
    if bucket is None and dest is None:
        raise UsageError(
            "no destination: give --bucket NAME (PCAP_GCS_BUCKET) for Cloud Storage or "
            "--dest DIR (GCS_MOUNT) for a directory"
        )
    return (parse_bucket(bucket) if bucket is not None else None), dest


class _UrlPrinter:
    """stdout gets one URL per line, flushed; a reader that went away stops the printing only."""

    def __init__(self):
        self._lock = threading.Lock()
        self._closed = False

    def uploaded(self, log):
        """The per-upload callback: one INFO line on stderr, the URL on stdout."""

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
            self.print(result.url)

        return on_uploaded

    def print(self, url: str) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                sys.stdout.write(url + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                self._closed = True
                silence_stdout()
