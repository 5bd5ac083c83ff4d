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
    http: bool = typer.Option(
        True,
        "--http/--no-http",
        envvar="PCAP_HTTP",
        help="TCP reassembly with HTTP/1.x, HTTP/2 and trace analysis (docs/http.md).",
    ),
    flows: bool = typer.Option(
        False,
        "--flows",
        envvar="PCAP_FLOWS",
        help="Also emit one connection record per TCP connection when it ends (like Zeek conn.log).",
    ),
    project: str = typer.Option(
        None,
        "--project",
        envvar=["PROJECT_ID", "GOOGLE_CLOUD_PROJECT"],
        help="Project for logging.googleapis.com/trace = projects/PROJECT/traces/TRACE.",
    ),
    redact_header: list[str] = typer.Option(
        ["authorization", "proxy-authorization", "cookie", "set-cookie"],
        "--redact-header",
        help="Header whose value is replaced by <redacted> in records (repeatable); "
        "--redact-header '' keeps every value.",
    ),
    body_sample: int = typer.Option(
        128,
        "--body-sample",
        min=0,
        max=65536,
        help="Bytes of each HTTP/1.x body kept in http.body_sample (0: none).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        envvar="PCAP_WORKERS",
        help="Worker processes; packets are sharded by flow so reassembly stays whole.",
    ),
    ordered: bool = typer.Option(
        False,
        "--ordered/--unordered",
        envvar="PCAP_ORDERED",
        help="With --workers > 1: records in capture order (else as soon as ready).",
    ),
    flow_timeout: float = typer.Option(
        300.0,
        "--flow-timeout",
        min=0.001,
        envvar="PCAP_FLOW_TIMEOUT",
        help="Seconds of capture time after which an idle TCP connection is evicted.",
    ),
    tcp_flow_memory: int = typer.Option(
        1 << 20,
        "--tcp-flow-memory",
        min=1024,
        help="Out-of-order bytes held per direction of a connection (beyond: tcp.gap).",
    ),
    tcp_memory: int = typer.Option(
        64 << 20,
        "--tcp-memory",
        min=65536,
        help="Out-of-order bytes held across all connections (beyond: tcp.gap).",
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

        pcaptool translate --flows --project my-proj --workers 2 --ordered big.pcap
    """
    from pcaptool.record.ndjson import NdjsonWriter, PrettyWriter
    from pcaptool.stdio import quiet_broken_pipe

    sources = inputs or ["-"]
    if sources == ["-"] and sys.stdin.isatty():
        raise UsageError(
            "no input: name a capture file or pipe one in (e.g. pcaptool capture | pcaptool translate)"
        )
    analyzer_kw = None
    if http:
        from pcaptool.tcp.reassembly import Limits

        limits = Limits(
            flow_bytes=tcp_flow_memory,
            total_bytes=tcp_memory,
            idle_timeout_ns=int(flow_timeout * 1_000_000_000),
        )
        analyzer_kw = {
            "project": project,
            "flows": flows,
            "limits": limits,
            "body_sample": body_sample,
            "redact": frozenset(h.strip().lower() for h in redact_header if h.strip()),
        }
    elif flows:
        raise UsageError("--flows needs the TCP analysis: drop --no-http")
    out = PrettyWriter() if pretty else NdjsonWriter(sys.stdout.buffer)
    with quiet_broken_pipe():
        failed = _translate_all(sources, out, analyzer_kw, workers if not pretty else 1, ordered)
    if failed:
        raise typer.Exit(EXIT_RUNTIME)


def _translate_all(
    sources: list[str], out, analyzer_kw: dict | None, workers: int, ordered: bool
) -> bool:
    from pcaptool.capfile.reader import CaptureReader, open_input
    from pcaptool.translate.serial import Translator

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
        try:
            if workers > 1:
                from pcaptool.translate.parallel import translate_parallel

                out.flush()  # the workers write to out.out directly
                translate_parallel(
                    reader, name, out.out.write, workers, ordered, analyzer_kw, out.flush
                )
                continue
            analyzer = None
            if analyzer_kw is not None:
                from pcaptool.tcp.analyzer import HttpAnalyzer

                analyzer = HttpAnalyzer(**analyzer_kw)
            translator = Translator(name, analyzer)
            try:
                for rec in translator.records(reader):
                    out.write(rec)
            finally:  # what is gathered goes out whatever stops the loop
                out.flush()
            warning = analyzer.limits_warning() if analyzer is not None else None
            if warning is not None:
                from pcaptool.log import log

                log(**warning)
        except CaptureFormatError as exc:
            out.flush()
            print(f"pcaptool: error: {exc}", file=sys.stderr)
            failed = True
        finally:
            if source != "-":
                stream.close()
    out.flush()
    return failed
