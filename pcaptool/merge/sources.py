"""Record sources of a capture merge: one input's packets as batches of (merge key, bytes).

Every input is framed by `pcaptool.capfile.framing.Framer`, fed chunk by chunk; one batch
per chunk keeps the per-packet work small. What keeps it fast:
- pcap output: a little-endian pcap stream of the output's resolution and link type is
  copied record by record (16-byte header + data, as read); anything else (big-endian,
  other resolution, pcapng) is re-encoded from its decoded packets;
- pcapng output: a little-endian section's enhanced packet blocks are copied (options
  included), only their 28-byte head rewritten when the interface number or the time unit
  changes; other blocks and streams are re-encoded.

The merge key of a record is `ts * n + rank` in the output's time unit, kept at its
running maximum (see `pcaptool.merge.captures._merge`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pcaptool.capfile.format import (
    BLOCK_CB_COPY,
    BLOCK_EPB,
    BLOCK_SPB,
    EPB_HEAD,
    LINKTYPE_NAMES,
    MAX_RECORD,
    MAX_TS_NS,
    U32,
)
from pcaptool.capfile.framing import (
    HEADER,
    INTERFACE,
    OTHER,
    PACKET,
    PACKETS,
    RUN,
    RUNS,
    Framer,
)
from pcaptool.capfile.streams import read_chunk
from pcaptool.capfile.writer import PcapngWriter, epb_block, pcap_record
from pcaptool.errors import CaptureFormatError, PcapToolError

Batch = list[tuple[int, bytes]]


def linktype_name(linktype: int) -> str:
    name = LINKTYPE_NAMES.get(linktype)
    return f"{linktype} ({name})" if name else str(linktype)


class OutputInterfaces:
    """Output pcapng interfaces: one per (link type, interface name) over all inputs."""

    def __init__(self, writer: PcapngWriter) -> None:
        self.writer = writer
        self.index: dict[tuple[int, str | None], int] = {}

    def declare(self, keys: dict[tuple[int, str | None], int]) -> None:
        for (linktype, ifname), snaplen in keys.items():
            self.index[(linktype, ifname)] = self.writer.add_interface(linktype, snaplen, ifname)

    def get(self, linktype: int, ifname: str | None, snaplen: int, tsresol: int = 9) -> int:
        """The output interface for these; TSRESOL other than 9 (ns) gets its own."""
        key = (linktype, ifname) if tsresol == 9 else (linktype, ifname, tsresol)
        found = self.index.get(key)
        if found is None:
            # A section or interface first seen mid-merge: its IDB goes out before its
            # first packet (pcapng allows an IDB anywhere in a section).
            found = self.index[key] = self.writer.add_interface(
                linktype, snaplen or MAX_RECORD, ifname, tsresol
            )
        return found


def _beyond_ns(
    framer: Framer, pkt, start: int, interfaces: OutputInterfaces
) -> tuple[int, int, int] | None:
    """A packet whose time is past 2**64 - 1 ns (clamped by the reader) as
    (true ns, output interface, time stamp in that interface's units), or None.

    Such a time only fits an EPB counted in its input interface's own (coarser) units, as
    `mergecap` keeps it: it goes out on an output interface of that `if_tsresol`.
    """
    u32 = U32[framer.byte_order].unpack_from
    if u32(framer.buf, start)[0] == BLOCK_SPB:  # no time stamp at all
        return None
    iface = framer.interfaces[pkt.iface]
    units = (u32(framer.buf, start + 12)[0] << 32) | u32(framer.buf, start + 16)[0]
    ns = iface.true_ns(units)
    if ns <= MAX_TS_NS:
        return None
    per_sec = 1_000_000_000 * iface.ts_div // iface.ts_mul
    units += iface.ts_offset_ns // 1_000_000_000 * per_sec  # the output has no if_tsoffset
    out = interfaces.get(iface.linktype, iface.name, iface.snaplen, iface.tsresol)
    return ns, out, min(max(units, 0), MAX_TS_NS)


def _chunks(stream: BinaryIO, framer: Framer, chunk: int) -> Iterator[bytes]:
    """The input's chunks; at its end, the framer's check for a unit cut short."""
    read = getattr(stream, "read1", stream.read)
    try:
        while True:
            data = read_chunk(read, chunk, framer.name, framer.count)
            if not data:
                framer.close()
                return
            yield data
    finally:
        stream.close()


def pcap_batches(
    stream: BinaryIO, name: str, idx: int, n: int, linktype: int, nanosecond: bool, chunk: int
) -> Iterator[Batch]:
    """Batches of (merge key, pcap record) of input IDX of N, for a pcap output."""
    framer = Framer(name, decode=RUNS)
    rank, unit = n - 1 - idx, 1 if nanosecond else 1000
    high, copy = -1, False
    for data in _chunks(stream, framer, chunk):
        batch: Batch = []
        append = batch.append
        try:
            for kind, _start, _end, info in framer.feed(data):
                if kind is RUN:  # records to copy, keyed by the framer
                    batch += info
                    high = framer.run_high
                elif kind is PACKET:
                    record = _pcap_record(framer, info, linktype, nanosecond)
                    key = info.ts_ns // unit * n + rank
                    if key > high:
                        high = key
                    append((high, record))
                elif kind is HEADER:
                    first = framer.interfaces[0] if framer.format == "pcap" else None
                    copy = (
                        first is not None
                        and framer.byte_order == "<"
                        and framer.nanosecond == nanosecond
                        and first.linktype == linktype
                    )
                    framer.decode = RUNS if copy else PACKETS
                    framer.run_key, framer.run_high = (n, rank), high
        except CaptureFormatError:
            if batch:
                yield batch  # the good packets before the break go out first
            raise
        if batch:
            yield batch


def _pcap_record(framer: Framer, pkt, linktype: int, nanosecond: bool) -> bytes:
    if pkt.linktype != linktype:
        raise PcapToolError(
            f"{framer.name}: packet {framer.count} has link type {linktype_name(pkt.linktype)}, "
            f"the pcap output has {linktype_name(linktype)}: use --format pcapng"
        )
    return pcap_record(pkt.ts_ns, pkt.data, pkt.wirelen, nanosecond)


def pcapng_batches(
    stream: BinaryIO, name: str, idx: int, n: int, interfaces: OutputInterfaces, chunk: int
) -> Iterator[Batch]:
    """Batches of (merge key, enhanced packet block) of input IDX of N, for a pcapng output."""
    framer = Framer(name, decode=PACKETS)
    # a block with no time (copiable custom block) takes the key of the record before it
    # in its input, or before any packet one below every packet's: idx - n
    rank, high = n - 1 - idx, idx - n
    mapping: list[int] = []  # output interface of each input interface of the section
    raw = False  # a little-endian pcapng section: its EPBs can be copied
    for data in _chunks(stream, framer, chunk):
        batch: Batch = []
        append = batch.append
        events = framer.feed(data)
        buf = framer.buf
        try:
            for kind, start, end, pkt in events:
                if kind is PACKET:
                    out = mapping[pkt.iface]
                    ts = pkt.ts_ns
                    far = _beyond_ns(framer, pkt, start, interfaces) if ts == MAX_TS_NS else None
                    if far is not None:
                        ts, out, units = far
                        block = epb_block(out, units, pkt.data, pkt.wirelen)
                    elif not raw or buf[start] != BLOCK_EPB:
                        block = epb_block(out, ts, pkt.data, pkt.wirelen)
                    elif out == pkt.iface and framer.interfaces[pkt.iface].native_ns:
                        block = buf[start:end]
                    else:
                        hi, lo = ts >> 32, ts & 0xFFFFFFFF
                        head = EPB_HEAD.pack(
                            BLOCK_EPB, end - start, out, hi, lo, pkt.caplen, pkt.wirelen
                        )
                        block = head + buf[start + 28 : end]
                    key = ts * n + rank
                    if key > high:
                        high = key
                    append((high, block))
                elif kind is OTHER:
                    if pkt == BLOCK_CB_COPY:  # mergecap copies these, at once
                        append((high, _custom_block(framer, buf, start, end)))
                elif kind is INTERFACE:
                    mapping.append(interfaces.get(pkt.linktype, pkt.name, pkt.snaplen))
                elif kind is HEADER:
                    raw = framer.format == "pcapng" and framer.byte_order == "<"
                    mapping = [
                        interfaces.get(i.linktype, i.name, i.snaplen) for i in framer.interfaces
                    ]
        except CaptureFormatError:
            if batch:
                yield batch  # the good packets before the break go out first
            raise
        if batch:
            yield batch


def _custom_block(framer: Framer, buf: bytes, start: int, end: int) -> bytes:
    """A copiable custom block, little-endian: its type, length and PEN; data as it is."""
    if framer.byte_order == "<":
        return buf[start:end]
    u32 = U32[">"].unpack_from
    blen, pen = u32(buf, start + 4)[0], u32(buf, start + 8)[0]
    pack = U32["<"].pack
    return pack(BLOCK_CB_COPY) + pack(blen) + pack(pen) + buf[start + 12 : end - 4] + pack(blen)
