"""`pcaptool relay`: run a consumer of a live capture stream, restarting it when it fails."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity
from pcaptool.errors import PcapToolError, UsageError
from pcaptool.signals import outlast_stop_signals


def relay(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="COMMAND",
            help="The consumer to run, after '--' (it reads a capture on stdin).",
            show_default=False,
        ),
    ] = None,
    backlog: Annotated[
        str,
        typer.Option(
            "--backlog",
            envvar="PCAP_JSON_BACKLOG",
            metavar="SIZE",
            help="Capture bytes held for the consumer while it is slow or restarting "
            "(e.g. 32M); beyond it packets are not handed over, and counted.",
        ),
    ] = "32M",
    name: Annotated[
        str, typer.Option("--name", help="The consumer's name in log lines and gap records.")
    ] = "translate",
    first_delay: Annotated[
        float,
        typer.Option(
            "--first-delay",
            min=0.0,
            help="Seconds before the first restart; each further one waits twice as long "
            "(at most 30).",
        ),
    ] = 1.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Feed COMMAND a capture stream from stdin; when it dies, start it again.

    The stream is framed, so a new COMMAND gets the file header in effect and goes on at
    the next packet boundary, after 1, 2, 4 ... 30 s. COMMAND's stdout is passed on in
    whole lines. Every gap (packets a dead COMMAND had not translated, packets not handed
    over while it was down or slow) is an ERROR log line and an ERROR record shaped as
    translate's `shed` record. Exit status: 0 when the input ended and the COMMAND that
    took the last of it exited 0 (earlier failures recovered from), else 1.

    Example:

    \b
        pcaptool capture -i eth0 -w - | pcaptool relay -- pcaptool translate -
    """
    set_verbosity(quiet, verbose)
    from pcaptool.log import Logger
    from pcaptool.sidecar.relay import Relay
    from pcaptool.sidecar.shed import parse_size

    if not command:
        raise UsageError("give the command to run after '--', e.g. -- pcaptool translate -")
    if sys.stdin.isatty():
        raise UsageError("stdin is a terminal: pipe a capture into relay")
    max_bytes = parse_size(backlog)
    if max_bytes <= 0:
        raise UsageError("--backlog must be a positive size, e.g. 32M")
    outlast_stop_signals()  # stopping is the end of input (capture stops first)
    log = Logger(component="relay")
    try:
        status = Relay(command, sys.stdout.fileno(), log, max_bytes, first_delay, name).run(0)
    except OSError as exc:  # the command cannot be started at all
        raise PcapToolError(f"relay: cannot run {command[0]}: {exc.strerror}") from None
    raise typer.Exit(status)
