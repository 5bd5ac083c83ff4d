"""`pcaptool translate`: packets to Cloud Logging NDJSON, one record per line."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from pcaptool.errors import EXIT_RUNTIME, CaptureFormatError, UsageError


def translate(
    inputs: list[str] = typer.Argument(
        None,
        metavar="[FILES|-]...",
        help="Captures to read (pcap/pcapng, optionally .gz); '-' or none: stdin.",
    ),
    pretty: bool = typer.Option(
        False, "--pretty", help="Indented, coloured JSON for humans instead of NDJSON."
    ),
) -> None:
    """Translate packets into structured JSON for Cloud Logging and jq.

    One JSON object per packet, one per line (NDJSON): Cloud Logging's timestamp,
    severity and message, the decoded layers (l2, arp, ip, icmp, tcp, udp, dns, tls),
    and a flow id shared by both directions. Keys are documented in docs/schema.md.
    A capture cut short or corrupt: every packet before the break is written, then one
    line on stderr and exit code 1.

    Example:

        pcaptool translate capture.pcap.gz | jq -c 'select(.tcp) | .message'

        pcaptool capture -i eth | pcaptool translate
    """
    from pcaptool.ndjson import NdjsonWriter, PrettyWriter
    from pcaptool.stdio import quiet_broken_pipe

    sources = inputs or ["-"]
    if sources == ["-"] and sys.stdin.isatty():
        raise UsageError(
            "no input: name a capture file or pipe one in (e.g. pcaptool capture | pcaptool translate)"
        )
    out = PrettyWriter() if pretty else NdjsonWriter(sys.stdout.buffer)
    with quiet_broken_pipe():
        failed = _translate_all(sources, out)
    if failed:
        raise typer.Exit(EXIT_RUNTIME)


def _translate_all(sources: list[str], out) -> bool:
    from pcaptool.pcapfile import CaptureReader, open_input
    from pcaptool.translate import Translator

    failed = False
    for source in sources:
        name = "-" if source == "-" else Path(source).name
        try:
            stream = open_input(source)
        except CaptureFormatError as exc:
            print(f"pcaptool: error: {exc}", file=sys.stderr)
            failed = True
            continue
        reader = CaptureReader(stream, name if source != "-" else "<stdin>", before_read=out.flush)
        translator = Translator(name)
        try:
            for rec in translator.records(reader):
                out.write(rec)
        except CaptureFormatError as exc:
            out.flush()
            print(f"pcaptool: error: {exc}", file=sys.stderr)
            failed = True
        finally:
            if source != "-":
                stream.close()
    out.flush()
    return failed
