"""The `pcaptool` command line: one module per subcommand, joined here."""

from __future__ import annotations

import sys

import typer

from pcaptool import __version__
from pcaptool.commands import (
    capture,
    compress,
    healthcheck,
    merge,
    query,
    report,
    rotate,
    schedule,
    schema,
    translate,
    upload,
)
from pcaptool.errors import PcapToolError
from pcaptool.stdio import quiet_broken_pipe

app = typer.Typer(
    name="pcaptool",
    help="Packet capture and analysis for serverless containers (Cloud Run, GKE, App Engine Flex).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("capture")(capture.capture)
app.command("translate")(translate.translate)
app.command("rotate")(rotate.rotate)
app.command("compress")(compress.compress)
app.command("upload")(upload.upload)
app.command(
    "schedule",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(schedule.schedule)
app.command("merge")(merge.merge)
app.command("query")(query.query)
app.command("report")(report.report)
app.command("schema")(schema.schema)
app.add_typer(healthcheck.app, name="healthcheck")


def _version(value: bool) -> None:
    if value:
        print(f"pcaptool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """pcaptool: capture packets, translate them to Cloud Logging JSON, and ship the parts."""


def main() -> None:
    """Run the CLI: project errors become one line on stderr, a closed pipe exits quietly."""
    from pcaptool import diagnostics

    diagnostics.install()  # PCAP_DEBUG=true: start and end of each stage, as DEBUG lines
    try:
        app(standalone_mode=True)
    except PcapToolError as exc:
        print(f"pcaptool: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        with quiet_broken_pipe():
            raise
    except KeyboardInterrupt:
        sys.exit(130)
