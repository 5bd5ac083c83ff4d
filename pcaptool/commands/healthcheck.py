"""`pcaptool healthcheck serve|probe`: readiness for Cloud Run's TCP probe and Docker."""

from __future__ import annotations

from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)


@app.callback()
def healthcheck() -> None:
    """Readiness signal for Cloud Run's TCP startup probe and Docker's
    HEALTHCHECK.

    `serve` keeps a TCP port open only while `pcaptool capture` runs (its
    ready file exists); `probe` exits 0/1 on the same signal.

    Example:

    \b
        pcaptool healthcheck serve --port 12345 &
        pcaptool healthcheck probe || echo "capture is not running"
    """


ReadyFile = Annotated[
    str,
    typer.Option(
        "--ready-file",
        envvar="PCAP_READY_FILE",
        metavar="PATH",
        help="The file `pcaptool capture` creates while it runs.",
    ),
]
DEFAULT_READY_FILE = "/tmp/pcaptool/ready"


@app.command()
def serve(
    port: Annotated[
        int, typer.Option("--port", "-p", envvar="PCAP_HC_PORT", metavar="PORT", help="TCP port.")
    ] = 12345,
    host: Annotated[
        str, typer.Option("--host", metavar="ADDR", help="Address to listen on.")
    ] = "0.0.0.0",
    ready_file: ReadyFile = DEFAULT_READY_FILE,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Accept TCP connections on --port only while capture is running.

    The port is listening while the ready file exists (capture's handles are
    open and its filter applied) and closed otherwise, so connections are
    refused before capture is ready and after it ends. Runs until
    SIGTERM/SIGINT (exit 0).

    Example:

    \b
        pcaptool healthcheck serve --port 12345 &
        pcaptool capture -i eth -w /pcap/part.pcap
    """
    from pcaptool.errors import UsageError
    from pcaptool.log import log

    set_verbosity(quiet, verbose)
    from pcaptool.sidecar.health import serve as serve_port

    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be 1-65535 (got {port})")
    serve_port(ready_file, port, host=host, log=log)


@app.command()
def probe(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            metavar="PORT",
            help="Also require a TCP connect to this port on 127.0.0.1.",
        ),
    ] = None,
    ready_file: ReadyFile = DEFAULT_READY_FILE,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Exit 0 if capture is running (ready file present, its process alive), else
    1.

    Example:

    \b
        HEALTHCHECK CMD pcaptool healthcheck probe || exit 1
    """
    from pcaptool.sidecar.health import is_ready, port_accepts

    set_verbosity(quiet, verbose)

    ok = is_ready(ready_file) and (port is None or port_accepts(port))
    raise typer.Exit(0 if ok else 1)
