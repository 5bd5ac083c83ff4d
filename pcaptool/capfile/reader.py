"""Reading capture files: pcap (us/ns, either byte order) and pcapng, plain or gzip.

`CaptureReader` pulls chunks from a stream with `read1()` and pushes them through the one
framer (`pcaptool.capfile.framing`), so a live `capture | translate` sees each packet as
soon as its bytes arrive, and nothing seeks. The format's constants, `Packet` and
`Interface` live in `format.py`, the writers in `writer.py`; they are named here too, so
`from pcaptool.capfile.reader import ...` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from pcaptool.capfile.format import (
    BLOCK_EPB,
    BLOCK_HEADER,
    BLOCK_IDB,
    BLOCK_PB,
    BLOCK_SPB,
    EPB_BODY,
    GZIP_MAGIC,
    IDB_BODY,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NAMES,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    MAX_BLOCK,
    MAX_RECORD,
    OPT_ENDOFOPT,
    OPT_IF_NAME,
    OPT_IF_TSOFFSET,
    OPT_IF_TSRESOL,
    OPTION,
    PB_BODY,
    PCAP_HEADER,
    PCAP_MAGIC,
    PCAP_RECORD,
    PCAPNG_BOM,
    PCAPNG_SHB,
    SHB_BODY,
    U16,
    U32,
    Interface,
    Packet,
    stream_header_at,
)
from pcaptool.capfile.framing import Framer
from pcaptool.capfile.streams import CHUNK, open_input, read_chunk
from pcaptool.capfile.writer import PcapngWriter, PcapWriter
from pcaptool.errors import CaptureFormatError

__all__ = [
    "BLOCK_EPB",
    "BLOCK_HEADER",
    "BLOCK_IDB",
    "BLOCK_PB",
    "BLOCK_SPB",
    "CHUNK",
    "EPB_BODY",
    "GZIP_MAGIC",
    "IDB_BODY",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NAMES",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "MAX_BLOCK",
    "MAX_RECORD",
    "OPTION",
    "OPT_ENDOFOPT",
    "OPT_IF_NAME",
    "OPT_IF_TSOFFSET",
    "OPT_IF_TSRESOL",
    "PB_BODY",
    "PCAPNG_BOM",
    "PCAPNG_SHB",
    "PCAP_HEADER",
    "PCAP_MAGIC",
    "PCAP_RECORD",
    "SHB_BODY",
    "U16",
    "U32",
    "CaptureReader",
    "Interface",
    "Packet",
    "PcapWriter",
    "PcapngWriter",
    "open_input",
    "read_packets",
    "stream_header_at",
]


class CaptureReader:
    """Iterate the packets of a pcap or pcapng stream.

    Every packet before a break is yielded; then `CaptureFormatError` says where and why.
    Concatenated captures (a new pcap header after the records, or a new pcapng section)
    are read on; `section` counts the headers seen so far minus one.
    """

    def __init__(self, stream: BinaryIO, name: str = "-", before_read=None) -> None:
        self.name = name
        # Called before each read that may block: a live consumer flushes its output here,
        # so `capture | translate` is live without a flush per record.
        self.before_read = before_read
        self._stream = stream
        self._read = getattr(stream, "read1", stream.read)
        self.framer = Framer(name)

    format = property(lambda self: self.framer.format)
    interfaces = property(lambda self: self.framer.interfaces)
    nanosecond = property(lambda self: self.framer.nanosecond)
    snaplen = property(lambda self: self.framer.snaplen)
    section = property(lambda self: self.framer.section)
    count = property(lambda self: self.framer.count, doc="packets yielded so far")
    offset = property(lambda self: self.framer.offset, doc="input offset of the next unit")

    def __iter__(self) -> Iterator[Packet]:
        framer, read, name = self.framer, self._read, self.name
        packets, before = framer.packets, self.before_read
        while True:
            if before is not None:
                before()
            chunk = read_chunk(read, CHUNK, name, framer.count)
            if not chunk:
                break
            yield from packets(chunk)
        if framer.section < 0 and not framer.pending:
            raise CaptureFormatError(f"{name}: empty input, not a capture")
        framer.close()


def read_packets(
    source: str | os.PathLike | BinaryIO | None, name: str | None = None
) -> Iterator[Packet]:
    """Every packet of a capture path/stream (`-` = stdin); raises CaptureFormatError at a break."""
    stream = open_input(source)
    try:
        yield from CaptureReader(
            stream, name or (str(source) if source not in (None, "-") else "<stdin>")
        )
    finally:
        if source not in (None, "-") and not hasattr(source, "read"):
            stream.close()
