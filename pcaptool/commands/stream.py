"""`pcaptool stream`: a capture as a pcap byte stream over TCP (PCAP-over-IP)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity
from pcaptool.errors import UsageError

Files = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="FILES",
        show_default=False,
        help="Captures to send (pcap/pcapng, .gz too; default: stdin, `-`).",
    ),
]
To = Annotated[
    str,
    typer.Option(
        "--to",
        envvar="PCAP_POI_TARGET",
        metavar="HOST:PORT",
        show_default=False,
        help="The receiver (Arkime's PCAP-over-IP reader, `nc -l PORT`); [v6addr]:PORT.",
    ),
]
BacklogSize = Annotated[
    str,
    typer.Option(
        "--backlog",
        envvar="PCAP_POI_BACKLOG",
        metavar="SIZE",
        help="Live input (a pipe): packets held while the receiver is slow (K, M, G); "
        "beyond it whole packets are dropped and counted. 0: no backlog (the sender "
        "waits for the receiver and may slow the stage before).",
    ),
]
SelfPorts = Annotated[
    str | None,
    typer.Option(
        "--self-ports",
        envvar="PCAP_SELF_PORTS",
        metavar="LO-HI",
        show_default=False,
        help="Connect from a local port of this range (the sidecar's capture excludes it).",
    ),
]
ConnectTimeout = Annotated[
    float, typer.Option("--connect-timeout", help="Seconds a connection attempt may take.")
]
SendTimeout = Annotated[
    float,
    typer.Option(
        "--send-timeout",
        help="A receiver that takes nothing for this long (s) is dropped and reconnected.",
    ),
]


def stream(
    files: Files = None,
    to: To = "",
    backlog: BacklogSize = "16M",
    self_ports: SelfPorts = None,
    connect_timeout: ConnectTimeout = 5.0,
    send_timeout: SendTimeout = 30.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Send a capture to a TCP receiver as one pcap stream (PCAP-over-IP).

    Connects out to HOST:PORT, sends a pcap global header (microsecond time stamps, the
    first packet's link type) and then each packet as a whole record; reconnects with
    backoff (1 s doubling to 30 s), each new connection starting with a header. On live
    input (a pipe) the input is read at once into a bounded backlog: a slow or absent
    receiver never slows the stage before; whole packets are dropped instead, and one
    WARNING line per run of them says how many and which (`poi_dropped`). Files are sent
    whole: the sender waits for the receiver.

    Example:

    \b
        nc -l 57012 | wireshark -k -i -          # on the receiver
        pcaptool capture -i eth0 -w - | pcaptool stream --to receiver.example:57012
        pcaptool stream --to 127.0.0.1:57012 part1.pcap part2.pcap.gz
    """
    set_verbosity(quiet, verbose)
    from pcaptool.log import log
    from pcaptool.sidecar import poi, selfport
    from pcaptool.sidecar.shed import parse_size

    target = poi.parse_target(to, "--to/PCAP_POI_TARGET")
    if target is None:
        raise UsageError("--to HOST:PORT (or PCAP_POI_TARGET) names no receiver")
    if connect_timeout <= 0 or send_timeout <= 0:
        raise UsageError("--connect-timeout and --send-timeout must be positive")
    size = parse_size(backlog)
    sources = files or ["-"]
    live = sources == ["-"] and size > 0 and _stdin_is_pipe()
    streamer = poi.Streamer(
        target,
        log,
        ports=selfport.parse(self_ports, "--self-ports/PCAP_SELF_PORTS"),
        block=not live,
        connect_timeout=connect_timeout,
        send_timeout=send_timeout,
    )
    try:
        if live:
            backlog_ = _live_backlog(streamer.flush, size)
            streamer.run(backlog_, ended=lambda: backlog_.ended)
        else:
            streamer.run(_packets(sources, streamer.flush))
    finally:  # a broken input (one-line error) still ends the stream cleanly
        streamer.close()


def _stdin_is_pipe() -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(0).st_mode)
    except OSError:
        return False


def _live_backlog(on_idle, size: int):
    """Stdin (a pipe) read at once into a bounded backlog (sidecar/shed.py)."""
    from pcaptool.capfile.reader import CaptureReader, open_input
    from pcaptool.sidecar.shed import Backlog, enlarge_pipe, quick_switching

    enlarge_pipe(0)
    quick_switching()
    return Backlog(CaptureReader(open_input("-"), "<stdin>"), size, on_idle=on_idle)


def _packets(sources: list[str], on_idle) -> Iterator:
    """The packets of every source in turn (files, or stdin that is not a pipe)."""
    from pcaptool.capfile.reader import CaptureReader, open_input

    for source in sources:
        stream = open_input(source)
        name = "<stdin>" if source == "-" else source
        try:
            yield from CaptureReader(stream, name, before_read=on_idle)
        finally:
            if source != "-":
                stream.close()
