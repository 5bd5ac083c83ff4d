"""`pcaptool compress`: gzip finished files (paths from args, stdin or a watched directory)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity
from pcaptool.errors import PcapToolError, UsageError

# compress's options
Paths = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="FILES",
        show_default=False,
        help="Files to compress (default: read paths from stdin, one a line).",
    ),
]
Enabled = Annotated[
    bool,
    typer.Option(
        "--compress/--no-compress",
        envvar="PCAP_COMPRESS",
        help="With --no-compress (PCAP_COMPRESS=false) paths pass through unchanged.",
    ),
]
Level = Annotated[
    int,
    typer.Option(
        "--level",
        envvar="PCAP_COMPRESS_LEVEL",
        min=0,
        max=3,
        help="ISA-L deflate level 0-3 (2: several times gzip -6's speed, a few % larger).",
    ),
]
Watch = Annotated[
    Path | None,
    typer.Option(
        "--watch",
        help="Instead of paths, compress every finished file appearing in DIR "
        "(skips dot-files and .gz) until SIGTERM.",
    ),
]
DrainTimeout = Annotated[
    float,
    typer.Option(
        "--drain-timeout",
        help="After SIGTERM, keep compressing paths that still arrive on stdin for this "
        "long (s); later ones are passed on uncompressed.",
    ),
]


def compress(
    paths: Paths = None,
    enabled: Enabled = True,
    level: Level = 2,
    watch: Watch = None,
    drain_timeout: DrainTimeout = 5.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """gzip each finished file to FILE.gz, remove FILE, print the new path.

    The .gz is written as `.FILE.gz.*.tmp`, fsynced and linked into place (never over
    an existing FILE.gz) before FILE is removed, so a crash never leaves a half file
    under either name. Output is plain gzip (gunzip, zcat, Wireshark and tshark read
    it). SIGTERM finishes the file in hand; on stdin, paths the stage before still
    sends are taken for --drain-timeout seconds.

    Example:

    \b
        pcaptool rotate --dir /tmp/parts < capture.pcap | pcaptool compress | pcaptool upload
        pcaptool compress /tmp/parts/part__eth0__20261126T153000.pcap
    """
    set_verbosity(quiet, verbose)
    from pcaptool.sidecar.compress import (
        Compressor,
        lines_in_background,
        run_paths,
        run_queue,
        watch_dir,
    )
    from pcaptool.signals import StopSignals
    from pcaptool.stdio import quiet_broken_pipe

    if paths and watch:
        raise UsageError("give either PATHS or --watch DIR, not both")
    if drain_timeout < 0:
        raise UsageError("--drain-timeout must not be negative")

    def emit(path: str) -> None:
        sys.stdout.write(path + "\n")
        sys.stdout.flush()

    compressor = Compressor(emit, enabled, level)
    with quiet_broken_pipe(), StopSignals() as stop:
        if watch is not None:
            watch_dir(watch, compressor, stop)
        elif paths:
            run_paths(paths, compressor, stop)
        else:
            run_queue(lines_in_background(sys.stdin.buffer), compressor, stop, drain_timeout)
    if compressor.failures:
        raise PcapToolError(f"{compressor.failures} file(s) could not be compressed (see log)")
