"""Options every command shares, declared once: `-q`/`-v`, and the snap length rule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pcaptool import verbosity

Quiet = Annotated[
    bool,
    typer.Option("-q", "--quiet", help="Say only warnings and errors on stderr."),
]
Verbose = Annotated[
    bool,
    typer.Option("-v", "--verbose", help="Say more on stderr (debug lines, a summary at the end)."),
]

# tcpdump's rule, and the reference sidecar's documented PCAP_SNAPSHOT_LENGTH=0 default
WHOLE_PACKET = 262144


# `query` and `report`: where gs:// parts are cached, and DuckDB's memory limit
CacheDir = Annotated[
    Path | None,
    typer.Option("--cache-dir", metavar="DIR", help="Where gs:// parts are cached."),
]
DuckMemory = Annotated[
    str,
    typer.Option(
        "--memory", metavar="SIZE", help="DuckDB's memory limit; past it, it spills to disk."
    ),
]
DUCK_MEMORY = "256MB"


def snaplen_or_whole(snaplen: int) -> int:
    """A snap length of 0 means the whole packet, 262144 bytes, as in tcpdump."""
    return WHOLE_PACKET if snaplen == 0 else snaplen


def set_verbosity(quiet: bool, verbose: bool) -> None:
    verbosity.set_level(quiet=quiet, verbose=verbose)


# The tcpdump/tshark habits `translate` and `merge` share.
ReadFiles = Annotated[
    list[str] | None,
    typer.Option(
        "-r",
        "--read",
        metavar="FILE",
        help="Read this capture (repeatable), as tcpdump -r; then the trailing words "
        "are a read filter: pcaptool translate -r x.pcap 'tcp port 80'.",
        show_default=False,
    ),
]
Count = Annotated[
    int,
    typer.Option(
        "-c", "--count", min=0, metavar="N", help="Stop after N packets (after the filter)."
    ),
]
ReadFilter = Annotated[
    str | None,
    typer.Option(
        "-f",
        "--filter",
        metavar="EXPR",
        help="BPF read filter, as tcpdump -r FILE EXPR keeps (libpcap compiles it for each "
        "link type).",
        show_default=False,
    ),
]
Where = Annotated[
    str | None,
    typer.Option(
        "--where",
        metavar="EXPR",
        help="Keep records where EXPR holds, jq's select() syntax without it: "
        "'http.status >= 500', '.tcp and not .http', 'tls.sni ~ \"example\"' "
        "(docs/select.md).",
        show_default=False,
    ),
]
Fields = Annotated[
    str | None,
    typer.Option(
        "--fields",
        metavar="LIST",
        help="Keep only these fields of each record, nesting kept: pcap.num,ip.src,http.status.",
        show_default=False,
    ),
]

# `translate`: how long a DNS query waits for its response (pcaptool/decode/dnstxn.py)
DnsTimeout = Annotated[
    float,
    typer.Option(
        "--dns-timeout",
        metavar="SECS",
        min=0.001,
        max=3600,
        envvar="PCAP_DNS_TIMEOUT",
        help="Seconds of capture time a DNS query waits for its response; then a record "
        "with dns.outcome timeout.",
    ),
]
DNS_TIMEOUT = 5.0


def split_files_and_filter(
    positional: list[str] | None, read: list[str] | None, flt: str | None
) -> tuple[list[str], str | None]:
    """tcpdump's rule: with -r the trailing words are the filter; without, they are files."""
    from pcaptool.errors import UsageError

    words = list(positional or [])
    if read:
        if words and flt:
            raise UsageError("give the read filter once: -f EXPR or trailing words, not both")
        return list(read), (" ".join(words) if words else flt)
    return words, flt
