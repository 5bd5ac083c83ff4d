"""`pcaptool rotate`: cut a capture stream on stdin into finished parts, print their paths."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity
from pcaptool.errors import UsageError

DEFAULT_DIR = Path("/tmp/pcaptool/parts")


# rotate's options
Directory = Annotated[
    Path,
    typer.Option(
        "--dir",
        "-d",
        envvar="PCAP_ROTATE_DIR",
        help="Directory for the parts (created if missing).",
    ),
]
Every = Annotated[
    float,
    typer.Option(
        "--every",
        envvar="PCAP_ROTATE_SECS",
        help="Close a part this many seconds after it opened, packets or not (0 = never).",
    ),
]
MaxBytes = Annotated[
    int,
    typer.Option(
        "--max-bytes",
        envvar="PCAP_ROTATE_BYTES",
        help="Also close a part before it would exceed this size (0 = no limit).",
    ),
]
Keep = Annotated[
    int,
    typer.Option(
        "--keep",
        envvar="PCAP_ROTATE_KEEP",
        help="Ring buffer: keep only the newest N finished parts in --dir (0 = keep all).",
    ),
]
Iface = Annotated[
    str | None,
    typer.Option(
        "--iface",
        envvar="PCAP_IFACE",
        help="Interface name for part names (default: the capture's own, else 'any').",
    ),
]
Ext = Annotated[
    str | None,
    typer.Option(
        "--ext",
        envvar="PCAP_FILE_EXT",
        help="Extension of capture parts (default: pcap or pcapng, as the input). "
        "NDJSON parts are always .json.",
    ),
]
InputFormat = Annotated[
    str,
    typer.Option(
        "--format",
        "-F",
        metavar="FORMAT",
        help="Input: 'capture' (pcap or pcapng, detected) or 'ndjson' (one record a line).",
    ),
]
DrainTimeout = Annotated[
    float,
    typer.Option(
        "--drain-timeout",
        help="After SIGTERM/SIGINT, keep reading what is on the way for at most this long (s).",
    ),
]


def rotate(
    directory: Directory = DEFAULT_DIR,
    every: Every = 60,
    max_bytes: MaxBytes = 0,
    keep: Keep = 0,
    iface: Iface = None,
    ext: Ext = None,
    input_format: InputFormat = "capture",
    drain_timeout: DrainTimeout = 2.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Read a capture stream (or NDJSON) on stdin; write parts of --every seconds.

    Each part is written as `.NAME.tmp`, fsynced, renamed to
    `part__<iface>__<YYYYmmddTHHMMSS>[_NNNN].<ext>` (UTC second the part opened; `_NNNN`
    only when another part opened in that second) and then its path is printed.
    A new capture header on stdin starts a new part. End of input or SIGTERM closes
    the last part and exits 0. A stream without packets writes no part.

    Example:

    \b
        tcpdump -i eth0 -w - | pcaptool rotate --dir /tmp/parts --every 60 | pcaptool compress
    """
    set_verbosity(quiet, verbose)
    from pcaptool.sidecar.rotate import Rotator, rotate_stream
    from pcaptool.signals import StopSignals
    from pcaptool.stdio import quiet_broken_pipe

    if every < 0 or max_bytes < 0 or keep < 0 or drain_timeout < 0:
        raise UsageError("--every, --max-bytes, --keep and --drain-timeout must not be negative")
    if input_format not in ("capture", "ndjson"):
        raise UsageError(f"--format must be 'capture' or 'ndjson', not {input_format!r}")
    if every == 0 and max_bytes == 0:
        raise UsageError("--every 0 needs --max-bytes (otherwise the one part never closes)")
    if sys.stdin.isatty():
        raise UsageError(
            "no input: pipe a capture in (e.g. pcaptool capture | pcaptool rotate --dir DIR)"
        )

    def on_part(path: Path) -> None:
        sys.stdout.write(f"{path}\n")
        sys.stdout.flush()

    with quiet_broken_pipe(), StopSignals() as stop:
        rotator = Rotator(
            directory, every, on_part, max_bytes=max_bytes, keep=keep, iface=iface, ext=ext
        )
        rotate_stream(
            sys.stdin.buffer, rotator, input_format, stop=stop, drain_timeout=drain_timeout
        )
