"""pcap and pcapng declared as data: magic numbers, block layouts, limits, interfaces.

Formats: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html (pcap) and
https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html (pcapng). The one framer
(`pcaptool.capfile.framing`) and the writers build on these; nothing else parses bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

# Link types this project decodes (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "NULL",
    LINKTYPE_ETHERNET: "EN10MB",
    LINKTYPE_RAW: "RAW",
    LINKTYPE_LOOP: "LOOP",
    LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_IPV4: "IPV4",
    LINKTYPE_IPV6: "IPV6",
    LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
}

GZIP_MAGIC = b"\x1f\x8b"
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_BOM_SWAPPED = 0x4D3C2B1A
PCAP_MAGIC_US, PCAP_MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D

# pcap magic as read little-endian -> (byte order prefix, nanosecond resolution)
PCAP_MAGIC = {
    PCAP_MAGIC_US: ("<", False),
    0xD4C3B2A1: (">", False),
    PCAP_MAGIC_NS: ("<", True),
    0x4D3CB2A1: (">", True),
}
# A record header whose first word is one of these may in fact be a new file header.
NEW_STREAM_WORDS = frozenset(PCAP_MAGIC) | {PCAPNG_SHB}

PCAP_HEADER = {bo: struct.Struct(bo + "IHHiIII") for bo in "<>"}
PCAP_RECORD = {bo: struct.Struct(bo + "IIII") for bo in "<>"}
BLOCK_HEADER = {bo: struct.Struct(bo + "II") for bo in "<>"}
SHB_BODY = {bo: struct.Struct(bo + "IHHq") for bo in "<>"}
IDB_BODY = {bo: struct.Struct(bo + "HHI") for bo in "<>"}
EPB_BODY = {bo: struct.Struct(bo + "IIIII") for bo in "<>"}
PB_BODY = {bo: struct.Struct(bo + "HHIIII") for bo in "<>"}
OPTION = {bo: struct.Struct(bo + "HH") for bo in "<>"}
U32 = {bo: struct.Struct(bo + "I") for bo in "<>"}
U16 = {bo: struct.Struct(bo + "H") for bo in "<>"}
I64 = {bo: struct.Struct(bo + "q") for bo in "<>"}
# a whole EPB head: type, length, interface, ts high, ts low, captured, original length
EPB_HEAD = struct.Struct("<IIIIIII")

BLOCK_IDB, BLOCK_PB, BLOCK_SPB, BLOCK_EPB = 1, 2, 3, 6
# Custom blocks: one that may be copied into another file, and one that must not be.
BLOCK_CB_COPY, BLOCK_CB_NOCOPY = 0x00000BAD, 0x40000BAD
OPT_ENDOFOPT, OPT_IF_NAME, OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 0, 2, 9, 14
# The smallest length each block can have: its fixed fields plus both length words.
MIN_BLOCK = {PCAPNG_SHB: 28, BLOCK_IDB: 20, BLOCK_PB: 32, BLOCK_SPB: 16, BLOCK_EPB: 32}

# The largest packet libpcap and Wireshark accept (MAXIMUM_SNAPLEN, WTAP_MAX_PACKET_SIZE_
# STANDARD): a record claiming more is a format error, whatever the header's snaplen says.
MAX_RECORD = 262144
# A pcapng block is never this large in practice; larger means a corrupt length.
MAX_BLOCK = 16 * 1024 * 1024
# Time stamps are kept in [0, 2**64 - 1] ns (1970 to 2554): what pcapng can write back.
MAX_TS_NS = (1 << 64) - 1


class Packet(NamedTuple):
    ts_ns: int  # integer nanoseconds since the epoch, UTC
    caplen: int
    wirelen: int
    data: bytes
    iface: int  # interface index in its section (0 for pcap)
    linktype: int


@dataclass
class Interface:
    index: int
    linktype: int
    snaplen: int
    name: str | None = None
    # timestamp units -> ns: ns = units * ts_mul // ts_div + ts_offset_ns
    ts_mul: int = 1000
    ts_div: int = 1
    ts_offset_ns: int = 0
    tsresol: int = 6  # the `if_tsresol` byte as declared (6: microseconds, the default)

    @property
    def native_ns(self) -> bool:
        """Time stamps already count nanoseconds since the epoch (no scaling, no offset)."""
        return self.ts_mul == 1 and self.ts_div == 1 and not self.ts_offset_ns

    def true_ns(self, units: int) -> int:
        """A time stamp in this interface's units -> ns, not clamped."""
        return units * self.ts_mul // self.ts_div + self.ts_offset_ns

    def ts_ns(self, units: int) -> int:
        """A time stamp in this interface's units -> ns, clamped to [0, MAX_TS_NS]."""
        ts = units * self.ts_mul // self.ts_div + self.ts_offset_ns
        if 0 <= ts <= MAX_TS_NS:
            return ts
        return 0 if ts < 0 else MAX_TS_NS


def tsresol(value: int) -> tuple[int, int]:
    """An `if_tsresol` byte -> (ts_mul, ts_div) so that ns = units * ts_mul // ts_div."""
    if value & 0x80:  # a negative power of two
        return 1_000_000_000, 1 << (value & 0x7F)
    if value <= 9:
        return 10 ** (9 - value), 1
    return 1, 10 ** (value - 9)


def options(bo: str, buf, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(code, value) of each option in buf[pos:end]; stops at opt_endofopt or a bad length."""
    option = OPTION[bo].unpack_from
    while pos + 4 <= end:
        code, length = option(buf, pos)
        if code == OPT_ENDOFOPT or pos + 4 + length > end:
            return
        yield code, bytes(buf[pos + 4 : pos + 4 + length])
        pos += 4 + ((length + 3) & ~3)


def parse_idb(bo: str, buf, start: int, blen: int, index: int) -> Interface:
    """An interface description block (at least MIN_BLOCK[BLOCK_IDB] long) -> Interface."""
    linktype, _, snaplen = IDB_BODY[bo].unpack_from(buf, start + 8)
    iface = Interface(index, linktype, snaplen)
    for code, value in options(bo, buf, start + 16, start + blen - 4):
        if code == OPT_IF_NAME:
            iface.name = value.rstrip(b"\0").decode("utf-8", "replace")
        elif code == OPT_IF_TSRESOL and value:
            iface.ts_mul, iface.ts_div = tsresol(value[0])
            iface.tsresol = value[0]
        elif code == OPT_IF_TSOFFSET and len(value) == 8:
            iface.ts_offset_ns = I64[bo].unpack(value)[0] * 1_000_000_000
    return iface


def stream_header_at(buf, pos: int) -> str | None:
    """Return "pcap" or "pcapng" if the 12 bytes at `pos` start a capture file header, else None.

    Used where a record or block could begin, to notice a new capture stream concatenated
    on the same input (`capture` restarted by `schedule`, `cat a.pcap b.pcap`). A pcap
    header needs its magic and version 2 in that byte order; a pcapng SHB its byte-order
    magic, so a record whose timestamp happens to equal a magic is not mistaken for one.
    """
    if len(buf) - pos < 12:
        return None
    (word,) = U32["<"].unpack_from(buf, pos)
    if word in PCAP_MAGIC:
        bo = PCAP_MAGIC[word][0]
        return "pcap" if U16[bo].unpack_from(buf, pos + 4)[0] == 2 else None  # major version
    if word == PCAPNG_SHB:
        (bom,) = U32["<"].unpack_from(buf, pos + 8)
        return "pcapng" if bom in (PCAPNG_BOM, PCAPNG_BOM_SWAPPED) else None
    return None
