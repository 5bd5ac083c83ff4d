"""`pcaptool translate`: packets to Cloud Logging NDJSON, one record per line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pcaptool.commands._options import (
    DNS_TIMEOUT,
    Analysis,
    Count,
    DnsTimeout,
    Fields,
    Quiet,
    ReadFiles,
    ReadFilter,
    Verbose,
    Where,
    set_verbosity,
    split_files_and_filter,
)
from pcaptool.errors import EXIT_RUNTIME, CaptureFormatError, UsageError
from pcaptool.http.records import DEFAULT_REDACT

# translate's own options (those it shares with merge are in _options.py)
Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="FILES",
        help="Captures to read (pcap/pcapng, optionally .gz); '-' or none: stdin. "
        "With -r: the read filter, as tcpdump's trailing expression.",
        show_default=False,
    ),
]
Pretty = Annotated[
    bool, typer.Option("--pretty", help="Indented, coloured JSON for humans instead of NDJSON.")
]
Http = Annotated[
    bool,
    typer.Option(
        "--http/--no-http",
        envvar="PCAP_HTTP",
        help="TCP reassembly with HTTP/1.x, HTTP/2 and trace analysis (docs/http.md).",
    ),
]
Flows = Annotated[
    bool,
    typer.Option(
        "--flows",
        envvar="PCAP_FLOWS",
        help="Also emit one connection record per TCP connection when it ends (like Zeek conn.log).",
    ),
]
Project = Annotated[
    str | None,
    typer.Option(
        "--project",
        metavar="PROJECT",
        envvar=["PROJECT_ID", "GOOGLE_CLOUD_PROJECT"],
        help="Project for logging.googleapis.com/trace = projects/PROJECT/traces/TRACE "
        "(default: the metadata server's, on Google Cloud; else the bare trace id).",
    ),
]
RedactHeader = Annotated[
    list[str] | None,
    typer.Option(
        "--redact-header",
        metavar="HEADER",
        help="Header whose value is replaced by <redacted> in records (repeatable); "
        "--redact-header '' keeps every value.",
        show_default=", ".join(DEFAULT_REDACT),
    ),
]
BodySample = Annotated[
    int,
    typer.Option(
        "--body-sample",
        metavar="BYTES",
        min=0,
        max=65536,
        help="Bytes of each HTTP/1.x body kept in http.body_sample (0: none).",
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        metavar="N",
        min=1,
        max=64,
        envvar="PCAP_WORKERS",
        help="Worker processes; packets are sharded by flow so reassembly stays whole.",
    ),
]
Ordered = Annotated[
    bool,
    typer.Option(
        "--ordered/--unordered",
        envvar="PCAP_ORDERED",
        help="With --workers > 1: records in capture order (else as soon as ready).",
    ),
]
FlowTimeout = Annotated[
    float,
    typer.Option(
        "--flow-timeout",
        metavar="SECS",
        min=0.001,
        envvar="PCAP_FLOW_TIMEOUT",
        help="Seconds of capture time after which an idle TCP connection is evicted.",
    ),
]
TcpFlowMemory = Annotated[
    int,
    typer.Option(
        "--tcp-flow-memory",
        metavar="BYTES",
        min=1024,
        help="Out-of-order bytes held per direction of a connection (beyond: tcp.gap).",
    ),
]
TcpMemory = Annotated[
    int,
    typer.Option(
        "--tcp-memory",
        metavar="BYTES",
        min=65536,
        help="Out-of-order bytes held across all connections (beyond: tcp.gap).",
    ),
]
BacklogSize = Annotated[
    str,
    typer.Option(
        "--backlog",
        envvar="PCAP_JSON_BACKLOG",
        metavar="SIZE",
        help="Live input (a pipe): read it at once into a backlog of this size (e.g. 32M) "
        "and shed packets beyond it, with one WARNING record per run shed (0: off).",
    ),
]
RunId = Annotated[
    str | None,
    typer.Option(
        "--run-id",
        envvar="PCAP_RUN_ID",
        metavar="ID",
        help="Id of this capture run, in pcap.id and the label run of every record "
        "(default: a new random id per invocation).",
        show_default=False,
    ),
]
Iface = Annotated[
    str | None,
    typer.Option(
        "--iface",
        "-i",
        envvar="PCAPTOOL_CAPTURE_IFACES",
        metavar="NAMES",
        help="The interfaces the input was captured on here (eth0 or eth0,eth1, in the "
        "capture's order), for captures that do not name them (pcap): pcap.iface gets "
        "the name, this system's interface index and addresses.",
        show_default=False,
    ),
]


def _detail(value: str) -> str:
    from pcaptool.record.verbosity import parse_level

    try:
        return parse_level(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


Detail = Annotated[
    str,
    typer.Option(
        "--verbosity",
        envvar="PCAP_VERBOSITY",
        callback=_detail,
        metavar="LEVEL",
        help="Record detail. DEBUG: whole records. INFO: envelope, L3/L4 without options "
        "and the HTTP summary; no headers, bodies, options or frame lists.",
    ),
]


def translate(
    inputs: Inputs = None,
    read: ReadFiles = None,
    count: Count = 0,
    bpf: ReadFilter = None,
    where: Where = None,
    fields: Fields = None,
    pretty: Pretty = False,
    http: Http = True,
    analysis: Analysis = True,
    flows: Flows = False,
    project: Project = None,
    redact_header: RedactHeader = None,
    body_sample: BodySample = 128,
    workers: Workers = 1,
    ordered: Ordered = False,
    flow_timeout: FlowTimeout = 300.0,
    dns_timeout: DnsTimeout = DNS_TIMEOUT,
    tcp_flow_memory: TcpFlowMemory = 1 << 20,
    tcp_memory: TcpMemory = 64 << 20,
    backlog: BacklogSize = "0",
    run_id: RunId = None,
    iface: Iface = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
    detail: Detail = "DEBUG",
) -> None:
    """Translate packets into structured JSON for Cloud Logging and jq.

    One JSON object per packet, one per line (NDJSON): Cloud Logging's timestamp,
    severity and message, the decoded layers (l2, arp, ip, icmp, tcp, udp, dns, tls),
    and a flow id shared by both directions. Keys are documented in docs/schema.md.
    A capture cut short or corrupt: every packet before the break is written, then one
    line on stderr and exit code 1.

    Read filter (-f EXPR, or the words after -r FILE) is BPF, applied as packets are
    read, exactly as tcpdump -r FILE EXPR; --where filters the decoded records.

    Example:

    \b
        pcaptool translate capture.pcap.gz | jq -c 'select(.tcp) | .message'
        pcaptool capture -i eth | pcaptool translate
        pcaptool translate --flows --project my-proj --workers 2 --ordered big.pcap
        pcaptool translate -r x.pcap -c 100 'tcp port 8080' --where 'http.status >= 500'
        pcaptool translate x.pcap --fields pcap.num,ip.src,http.status
    """
    set_verbosity(quiet, verbose)
    run_id = _set_run_id(run_id)
    sources, expression = split_files_and_filter(inputs, read, bpf)
    sources = _sources(sources)
    if flows and not http:
        raise UsageError("--flows needs the TCP analysis: drop --no-http")
    from pcaptool.api import TranslateOptions
    from pcaptool.translate.iface import parse_names

    options = TranslateOptions(
        http=http,
        analysis=analysis,
        flows=flows,
        project=project or _metadata_project(http),
        body_sample=body_sample,
        redact_headers=frozenset(DEFAULT_REDACT if redact_header is None else redact_header),
        flow_timeout=flow_timeout,
        dns_timeout=dns_timeout,
        tcp_flow_memory=tcp_flow_memory,
        tcp_memory=tcp_memory,
        run_id=run_id,
        ifaces=tuple(parse_names(iface)),
    )
    out = _writer(pretty, where, fields, expression, detail)
    from pcaptool.stdio import quiet_broken_pipe

    run = _Run(options, workers if not pretty else 1, ordered, expression, count, backlog)
    with quiet_broken_pipe():
        failed = run.all(sources, out)
    if failed:
        raise typer.Exit(EXIT_RUNTIME)


def _sources(sources: list[str]) -> list[str]:
    """The inputs named, else stdin, unless stdin is a terminal."""
    sources = sources or ["-"]
    if sources == ["-"] and sys.stdin.isatty():
        raise UsageError(
            "no input: name a capture file or pipe one in (e.g. pcaptool capture | pcaptool translate)"
        )
    return sources


def _metadata_project(http: bool) -> str | None:
    """On Google Cloud (Cloud Run's K_SERVICE, App Engine's GAE_SERVICE, or a metadata
    host named by GCE_METADATA_HOST), the project the metadata server names, so trace ids
    are qualified projects/PROJECT/traces/ID; elsewhere None, asked nowhere."""
    import os

    if not http or not any(
        os.environ.get(k) for k in ("K_SERVICE", "GAE_SERVICE", "GCE_METADATA_HOST")
    ):
        return None
    from pcaptool.sidecar.metadata import MetadataClient

    return MetadataClient(timeout=1.0).get("project/project-id")


def _set_run_id(run_id: str | None) -> str:
    """One id for every record of this run (given, PCAP_RUN_ID, or a new one); the
    options carry it to the translator, the analyzers' records and the workers."""
    import uuid

    return run_id or uuid.uuid4().hex[:16]


def _writer(pretty: bool, where, fields, expression, detail: str):
    """Check every expression before any input is read; then the writer they shape."""
    from pcaptool.capfile.readfilter import check_expression
    from pcaptool.record.ndjson import NdjsonWriter
    from pcaptool.record.pretty import PrettyWriter
    from pcaptool.record.verbosity import Reduced, reducer
    from pcaptool.translate.select import SelectingWriter, compile_where, parse_fields

    if expression:
        check_expression(expression)
    predicate = compile_where(where) if where else None
    paths = parse_fields(fields) if fields else None
    out = PrettyWriter() if pretty else NdjsonWriter(sys.stdout.buffer)
    out = SelectingWriter(out, predicate, paths) if predicate or paths else out
    reduce = reducer(detail)  # PCAP_VERBOSITY (record/verbosity.py)
    return Reduced(out, reduce) if reduce else out


class _Run:
    """One `translate` invocation over its inputs, in order; -c counts across them all."""

    def __init__(self, options, workers: int, ordered: bool, expression, count: int, backlog: str):
        from pcaptool.sidecar.shed import parse_size

        self.options = options
        self.workers = workers
        self.ordered = ordered
        self.expression = expression
        self.count = count
        self.backlog = parse_size(backlog)  # --backlog SIZE: bytes

    def all(self, sources: list[str], out) -> bool:
        """Translate every source to `out`; True when one could not be read to its end."""
        from pcaptool.capfile.reader import open_input

        failed = False
        remaining = self.count
        for source in sources:
            if self.count and remaining <= 0:
                break
            try:
                stream = open_input(source)
            except CaptureFormatError as exc:
                print(f"pcaptool: error: {exc}", file=sys.stderr)
                failed = True
                continue
            name = "-" if source == "-" else Path(source).name
            reader = self._reader(stream, name, source, out, remaining)
            try:
                if self.workers > 1:
                    self._parallel(reader, name, out)
                else:
                    self._serial(reader, name, source, out)
            except CaptureFormatError as exc:
                out.flush()
                print(f"pcaptool: error: {exc}", file=sys.stderr)
                failed = True
            finally:
                if source != "-":
                    stream.close()
            remaining -= getattr(reader, "kept", 0)
        out.flush()
        return failed

    def _reader(self, stream, name: str, source: str, out, remaining: int):
        from pcaptool.capfile.reader import CaptureReader
        from pcaptool.capfile.readfilter import FilteredReader

        reader = CaptureReader(stream, name if source != "-" else "<stdin>", before_read=out.flush)
        if self.expression or self.count:
            return FilteredReader(reader, self.expression, remaining)
        return reader

    def _parallel(self, reader, name: str, out) -> None:
        from pcaptool.translate.parallel import translate_parallel

        out.flush()  # the workers write to out.out directly
        write = getattr(out, "write_lines", out.out.write)
        reduce = getattr(out, "reduce", None)
        translate_parallel(
            reader, name, write, self.workers, self.ordered, self.options, out.flush, reduce
        )

    def _serial(self, reader, name: str, source: str, out) -> None:
        from pcaptool.record.ndjson import NdjsonWriter

        translator = self.options.translator(name)
        records = translator.records(_live(reader, source, self.backlog, out.flush))
        try:
            if type(out) is NdjsonWriter:  # records written whole: its own loop
                out.write_all(records)
            else:  # (not getattr: Reduced and SelectingWriter hand on what they lack)
                write = out.write
                for rec in records:
                    write(rec)
        finally:  # what is gathered goes out whatever stops the loop
            out.flush()
        analyzer = translator.analyzer
        warning = analyzer.limits_warning() if analyzer is not None else None
        if warning is not None:
            from pcaptool.log import log

            log(**warning)


def _live(reader, source: str, backlog: int, flush):
    """Stdin's packets through a bounded backlog (sidecar/shed.py) when it is a pipe."""
    import stat

    from pcaptool.sidecar.shed import Backlog, enlarge_pipe, quick_switching

    try:
        is_pipe = source == "-" and stat.S_ISFIFO(os.fstat(0).st_mode)
    except OSError:
        is_pipe = False
    if backlog <= 0 or not is_pipe:
        return reader
    enlarge_pipe(0)
    quick_switching()
    return Backlog(reader, backlog, on_idle=flush)
