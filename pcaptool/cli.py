"""The `pcaptool` command line: one module per subcommand, joined here.

Help is click's plain formatter (no panels: nothing is cut at 80 columns, `| head` and
`grep` see plain text). Usage errors are one line on stderr, `pcaptool CMD: error: …`,
exit 2, as tcpdump and argparse tools print them; a reader of stdout that goes away
(`pcaptool merge --list | head -2`) ends any command quietly with exit 0.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pcaptool import __version__
from pcaptool.commands import (
    capture,
    compress,
    healthcheck,
    merge,
    query,
    relay,
    report,
    rotate,
    schedule,
    schema,
    stream,
    translate,
    upload,
)
from pcaptool.errors import EXIT_USAGE, PcapToolError

_click = typer.core._click  # typer >= 0.26 ships its own copy of click


def _quiet_exit() -> None:
    """The reader went away: point stdout at /dev/null so no later flush complains, exit 0."""
    from pcaptool.stdio import silence_stdout

    silence_stdout()
    raise SystemExit(0)


def usage_line(exc: Exception, default_path: str = "pcaptool") -> str:
    """`pcaptool translate: error: no such option: -x`, from a click usage error."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else default_path
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(message.split())
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    return f"{path}: error: {message}"


_METAVAR_BY_TYPE = {"float": "SECS", "integer": "N", "path": "PATH"}


def _no_type_labels(command) -> None:
    """Typer labels values with Python types (`--tz <str>`, `FILES <list[str]>`): noise for a
    shell user. Arguments show their metavar only; an option without its own metavar gets
    one from its type (N, SECS, PATH) or its name (--tz TZ)."""
    for param in getattr(command, "params", []):
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
        elif param.metavar is None and not getattr(param, "is_flag", False):
            kind = param.bare_type().lower() if hasattr(param, "bare_type") else ""
            kind = "float" if "float" in kind else "integer" if "int" in kind else kind
            name = max(param.opts, key=len).lstrip("-").split("-")[-1].upper()
            param.metavar = _METAVAR_BY_TYPE.get(kind, name)
    for sub in getattr(command, "commands", {}).values():
        _no_type_labels(sub)


class PcapToolGroup(TyperGroup):
    """The root command: one-line errors, quiet closed pipes, the same under CliRunner."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except BrokenPipeError:  # `pcaptool --help | head -1`
            _quiet_exit()

    def invoke(self, ctx):  # type: ignore[override]
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a last print (capture --print-filter) fails here, not at exit
            return result
        except BrokenPipeError:
            _quiet_exit()

    def main(  # type: ignore[override]
        self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra: Any
    ) -> Any:
        _no_type_labels(self)
        try:
            code = super().main(
                args=args,
                prog_name=prog_name or "pcaptool",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except _click.exceptions.NoArgsIsHelpError as exc:  # `pcaptool healthcheck`
            exc.show()
            code = EXIT_USAGE
        except _click.exceptions.UsageError as exc:
            print(usage_line(exc), file=sys.stderr)
            code = EXIT_USAGE
        except _click.exceptions.ClickException as exc:  # e.g. a file option that cannot open
            print(usage_line(exc), file=sys.stderr)
            code = exc.exit_code
        except PcapToolError as exc:
            print(f"pcaptool: error: {exc}", file=sys.stderr)
            code = exc.exit_code
        except (typer.Abort, KeyboardInterrupt):
            code = 130
        except Exception as exc:  # a bug: still one line, the traceback on request
            if os.environ.get("PCAPTOOL_DEBUG"):
                raise
            print(
                f"pcaptool: internal error: {type(exc).__name__}: {exc} "
                "(PCAPTOOL_DEBUG=1 shows the traceback)",
                file=sys.stderr,
            )
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="pcaptool",
    cls=PcapToolGroup,
    help="Packet capture and analysis for serverless containers (Cloud Run, GKE, App Engine Flex).",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
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
app.command("relay")(relay.relay)
app.command("stream")(stream.stream)
app.add_typer(healthcheck.app, name="healthcheck")


def _version(value: bool) -> None:
    if value:
        print(f"pcaptool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """pcaptool: capture packets, translate them to Cloud Logging JSON, and ship the parts.

    Shell completion: pcaptool --install-completion (bash, zsh, fish, PowerShell).
    """


def main() -> None:
    """Run the CLI (the console script and `python -m pcaptool`)."""
    from pcaptool import diagnostics

    diagnostics.install()  # PCAP_DEBUG=true: start and end of each stage, as DEBUG lines
    app()
