"""`pcaptool healthcheck serve|probe`: readiness for Cloud Run's TCP probe and Docker."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.callback()
def healthcheck() -> None:
    """Readiness signal for Cloud Run's TCP startup probe and Docker's
    HEALTHCHECK.

    `serve` keeps a TCP port open only while `pcaptool capture` runs (its
    ready file exists); `probe` exits 0/1 on the same signal.

    Example:

        pcaptool healthcheck serve --port 12345 &

        pcaptool healthcheck probe || echo "capture is not running"
    """


_READY_FILE = typer.Option(
    "/tmp/pcaptool/ready",
    "--ready-file",
    envvar="PCAP_READY_FILE",
    help="The file `pcaptool capture` creates while it runs.",
)


@app.command()
def serve(
    port: int = typer.Option(12345, "--port", "-p", envvar="PCAP_HC_PORT", help="TCP port."),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on."),
    ready_file: str = _READY_FILE,
) -> None:
    """Accept TCP connections on --port only while capture is running.

    The port is listening while the ready file exists (capture's handles are
    open and its filter applied) and closed otherwise, so connections are
    refused before capture is ready and after it ends. Runs until
    SIGTERM/SIGINT (exit 0).

    Example:

        pcaptool healthcheck serve --port 12345 &
        pcaptool capture -i eth -w /pcap/part.pcap
    """
    from pcaptool.errors import UsageError
    from pcaptool.log import log
    from pcaptool.sidecar.health import serve as serve_port

    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be 1-65535 (got {port})")
    serve_port(ready_file, port, host=host, log=log)


@app.command()
def probe(
    port: int = typer.Option(
        None, "--port", "-p", help="Also require a TCP connect to this port on 127.0.0.1."
    ),
    ready_file: str = _READY_FILE,
) -> None:
    """Exit 0 if capture is running (ready file present, its process alive), else
    1.

    Example:

        HEALTHCHECK CMD pcaptool healthcheck probe || exit 1
    """
    from pcaptool.sidecar.health import is_ready, port_accepts

    ok = is_ready(ready_file) and (port is None or port_accepts(port))
    raise typer.Exit(0 if ok else 1)
