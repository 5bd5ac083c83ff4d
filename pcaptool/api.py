"""The library behind `pcaptool translate`, usable without the CLI (see `pcaptool`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pcaptool.capfile.reader import CaptureReader, Packet, open_input
from pcaptool.http.records import DEFAULT_REDACT

Source = str | os.PathLike | BinaryIO

REDACTED_HEADERS = frozenset(DEFAULT_REDACT)


@dataclass(frozen=True)
class TranslateOptions:
    """What `pcaptool translate`'s options set; the defaults are the command's."""

    http: bool = True  # TCP reassembly with HTTP/1.x, HTTP/2 and trace analysis
    flows: bool = False  # also one connection record per TCP connection (needs http)
    project: str | None = None  # for logging.googleapis.com/trace
    body_sample: int = 128  # bytes of each HTTP/1.x body kept in http.body_sample
    redact_headers: frozenset[str] = field(default=REDACTED_HEADERS)
    flow_timeout: float = 300.0  # seconds of capture time before an idle connection goes
    dns_timeout: float = 5.0  # seconds of capture time a DNS query waits for its answer
    tcp_flow_memory: int = 1 << 20  # out-of-order bytes held per direction
    tcp_memory: int = 64 << 20  # out-of-order bytes held across all connections
    run_id: str | None = None  # pcap.id and the label run (default: PCAP_RUN_ID, or none)
    # names of the interfaces the input was captured on, in its interface order, where
    # this system has them: pcap.iface gets their index and addresses (--iface)
    ifaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.flows and not self.http:
            raise ValueError("flows=True needs the TCP analysis (http=True)")

    def translator(self, input_name: str = "-"):
        """A `Translator` for one input, with the analyzer these options ask for."""
        from pcaptool.translate.iface import live_interfaces
        from pcaptool.translate.serial import Translator

        ifaces = live_interfaces(list(self.ifaces)) if self.ifaces else None
        return Translator(
            input_name,
            self.analyzer(),
            run_id=self.run_id,
            ifaces=ifaces,
            dns_timeout_ns=int(self.dns_timeout * 1_000_000_000),
        )

    def analyzer(self):
        """The TCP/HTTP analyzer these options ask for, or None (`http=False`)."""
        if not self.http:
            return None
        from pcaptool.tcp.analyzer import HttpAnalyzer
        from pcaptool.tcp.reassembly import Limits

        limits = Limits(
            flow_bytes=self.tcp_flow_memory,
            total_bytes=self.tcp_memory,
            idle_timeout_ns=int(self.flow_timeout * 1_000_000_000),
        )
        return HttpAnalyzer(
            project=self.project,
            flows=self.flows,
            limits=limits,
            body_sample=self.body_sample,
            redact=frozenset(h.strip().lower() for h in self.redact_headers if h.strip()),
        )


@contextmanager
def open_capture(source: Source) -> Iterator[CaptureReader]:
    """`with open_capture(source) as reader:` a reader of the pcap or pcapng capture at
    `source` (a path, `-` for stdin, or a binary file object; gzip is recognised by its
    magic). Iterating it yields `Packet`s; a file that breaks raises `CaptureFormatError`
    after the packets before the break. A path opened here is closed on leaving."""
    stream = open_input(source)
    try:
        yield CaptureReader(stream, _name(source))
    finally:
        if isinstance(source, (str, os.PathLike)) and source != "-":
            stream.close()


def packets(source: Source) -> Iterator[Packet]:
    """Every packet of the capture at `source`, then the file is closed."""
    with open_capture(source) as reader:
        yield from reader


def records(
    source: Source | CaptureReader, options: TranslateOptions | None = None, **kw
) -> Iterator[dict]:
    """The records of `pcaptool translate` (docs/schema.md) for the capture at `source`,
    one dict per packet (and connection records with `flows=True`). Options are a
    `TranslateOptions` or its fields as keywords: `records("x.pcap", http=False)`."""
    opts = options if options is not None else TranslateOptions(**kw)
    if options is not None and kw:
        raise TypeError("give options or keywords, not both")
    if isinstance(source, CaptureReader):
        yield from opts.translator(source.name).records(source)
        return
    with open_capture(source) as reader:
        yield from opts.translator(reader.name).records(reader)


def _name(source: Source) -> str:
    if source is None or source == "-":
        return "-"
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return getattr(source, "name", None) or "-"
