"""Reading and writing capture files: pcap (us/ns, either byte order) and pcapng.

Readers never seek, so a pipe works as well as a file: `open_input()` sniffs gzip by its
magic through `peek()`, and `CaptureReader` parses from a rolling buffer fed by `read1()`,
so a live `capture | translate` sees each packet as soon as its bytes arrive.

Formats: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html (pcap) and
https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html (pcapng).
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from pcaptool.errors import CaptureFormatError

try:  # isal raises its own error for invalid deflate data
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - isal is a dependency
    _IsalError = zlib.error

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

# pcap magic as read little-endian -> (byte order prefix, nanosecond resolution)
PCAP_MAGIC = {
    0xA1B2C3D4: ("<", False),
    0xD4C3B2A1: (">", False),
    0xA1B23C4D: ("<", True),
    0x4D3CB2A1: (">", True),
}
# A record header whose first word is one of these may in fact be a new file header.
_NEW_STREAM_WORDS = frozenset(PCAP_MAGIC) | {PCAPNG_SHB}

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

BLOCK_IDB, BLOCK_PB, BLOCK_SPB, BLOCK_EPB = 1, 2, 3, 6
OPT_ENDOFOPT, OPT_IF_NAME, OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 0, 2, 9, 14

# libpcap refuses records larger than this unless the snaplen says more (pcap-common.h).
MAX_RECORD = 262144
# A pcapng block is never this large in practice; larger means a corrupt length.
MAX_BLOCK = 64 * 1024 * 1024
CHUNK = 1 << 20


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


def stream_header_at(buf: bytes | memoryview, pos: int) -> str | None:
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
        return "pcapng" if bom in (PCAPNG_BOM, 0x4D3C2B1A) else None
    return None


def open_input(source: str | os.PathLike | BinaryIO | None) -> BinaryIO:
    """Open a capture for reading: a path, `-`/None for stdin, or a binary stream.

    gzip is recognised by its magic bytes and decompressed on the fly; nothing seeks.
    """
    if source is None or source == "-":
        stream: BinaryIO = sys.stdin.buffer
    elif isinstance(source, (str, os.PathLike)):
        try:
            stream = open(source, "rb")  # noqa: SIM115 - the caller owns and closes it
        except OSError as exc:
            raise CaptureFormatError(f"cannot open {source}: {exc.strerror}") from None
    else:
        stream = source
    head = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
    if len(head) < 2:
        # peek() may give fewer bytes than asked on a pipe: read them, then put them back.
        head = _read_exactly(stream, 2)
        stream = io.BufferedReader(_Prefixed(head, stream), CHUNK)  # type: ignore[assignment]
    if head == GZIP_MAGIC:
        from isal import igzip

        return igzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read: serves them, then the rest."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest
        self._read = getattr(rest, "read1", rest.read)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._rest.close()
        super().close()


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
        self._buf = b""
        self._pos = 0
        self._consumed = 0  # bytes before _buf[0]
        self.format: str | None = None
        self.interfaces: list[Interface] = []
        self.nanosecond = False
        self.snaplen = 0
        self.section = -1
        self.count = 0  # packets yielded so far

    # -- buffer ---------------------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        """Make `need` bytes available at `_pos`; False if the stream ends first."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos :]]
        self._consumed += self._pos
        self._pos = 0
        while have < need:
            if self.before_read is not None:
                self.before_read()
            try:
                chunk = self._read(max(CHUNK, need - have))
            except (OSError, EOFError, ValueError, zlib.error, _IsalError) as exc:
                # gzip data cut short or corrupt: the bytes before it were delivered.
                self._buf = b"".join(parts)
                raise CaptureFormatError(
                    f"{self.name}: compressed data is corrupt or cut short ({exc})"
                ) from None
            if not chunk:
                self._buf = b"".join(parts)
                return False
            parts.append(chunk)
            have += len(chunk)
        self._buf = b"".join(parts)
        return True

    @property
    def offset(self) -> int:
        """Byte offset in the (decompressed) input of the next unread byte."""
        return self._consumed + self._pos

    def _cut_short(self, what: str) -> CaptureFormatError:
        have = len(self._buf) - self._pos
        return CaptureFormatError(
            f"{self.name}: file cut short in {what} at byte {self.offset} "
            f"(after packet {self.count}; {have} bytes left over)"
        )

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Packet]:
        if not self._fill(4):
            if len(self._buf) == 0:
                raise CaptureFormatError(f"{self.name}: empty input, not a capture")
            raise self._cut_short("the file header")
        while True:
            (word,) = U32["<"].unpack_from(self._buf, self._pos)
            if word in PCAP_MAGIC:
                yield from self._read_pcap()
            elif word == PCAPNG_SHB:
                yield from self._read_pcapng()
            else:
                raise CaptureFormatError(
                    f"{self.name}: not a pcap or pcapng capture "
                    f"(magic 0x{self._buf[self._pos : self._pos + 4].hex()} at byte {self.offset})"
                )
            if not self._fill(4):
                if len(self._buf) != self._pos:
                    raise self._cut_short("a file header")
                return

    def _read_pcap(self) -> Iterator[Packet]:
        if not self._fill(24):
            raise self._cut_short("the pcap file header")
        (word,) = U32["<"].unpack_from(self._buf, self._pos)
        bo, nano = PCAP_MAGIC[word]
        _, major, _minor, _zone, _sigfigs, snaplen, network = PCAP_HEADER[bo].unpack_from(
            self._buf, self._pos
        )
        if major != 2:
            raise CaptureFormatError(f"{self.name}: unsupported pcap version {major}")
        self._pos += 24
        linktype = network & 0x0FFFFFFF
        self.format = "pcap"
        self.section += 1
        self.nanosecond = nano
        self.snaplen = snaplen
        self.interfaces = [Interface(0, linktype, snaplen, None, 1 if nano else 1000)]
        frac_mul = 1 if nano else 1000
        limit = max(snaplen, MAX_RECORD)
        unpack = PCAP_RECORD[bo].unpack_from
        while True:
            buf, pos = self._buf, self._pos
            if len(buf) - pos < 16:
                if not self._fill(16):
                    if len(self._buf) != self._pos:
                        raise self._cut_short(f"the header of packet record {self.count + 1}")
                    return
                buf, pos = self._buf, self._pos
            sec, frac, incl, orig = unpack(buf, pos)
            if sec in _NEW_STREAM_WORDS and stream_header_at(buf, pos):
                return  # a new capture stream follows on the same input
            if incl > limit:
                raise CaptureFormatError(
                    f"{self.name}: corrupt packet record {self.count + 1} at byte {self.offset}: "
                    f"captured length {incl} exceeds the limit {limit}"
                )
            end = pos + 16 + incl
            if end > len(buf):
                if not self._fill(16 + incl):
                    raise self._cut_short(f"packet record {self.count + 1}")
                buf, pos = self._buf, self._pos
                end = pos + 16 + incl
            self._pos = end
            self.count += 1
            yield Packet(
                sec * 1_000_000_000 + frac * frac_mul, incl, orig, buf[pos + 16 : end], 0, linktype
            )

    def _read_pcapng(self) -> Iterator[Packet]:
        bo = self._read_shb()
        block_header = BLOCK_HEADER[bo].unpack_from
        epb = EPB_BODY[bo].unpack_from
        while True:
            if not self._fill(8):
                if len(self._buf) != self._pos:
                    raise self._cut_short("a pcapng block header")
                return
            btype, blen = block_header(self._buf, self._pos)
            if btype == PCAPNG_SHB or (
                btype in PCAP_MAGIC and stream_header_at(self._buf, self._pos) == "pcap"
            ):
                return  # a new section or a new pcap stream: the caller reads it
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                raise CaptureFormatError(
                    f"{self.name}: corrupt pcapng block at byte {self.offset}: "
                    f"type 0x{btype:08x}, length {blen}"
                )
            if not self._fill(blen):
                raise self._cut_short(f"a pcapng block of type 0x{btype:08x}")
            buf, start = self._buf, self._pos
            self._pos = start + blen
            if U32[bo].unpack_from(buf, start + blen - 4)[0] != blen:
                raise CaptureFormatError(
                    f"{self.name}: corrupt pcapng block at byte {self.offset - blen}: "
                    "trailing length does not match"
                )
            if btype == BLOCK_EPB:
                iface_id, hi, lo, incl, orig = epb(buf, start + 8)
                if 28 + incl > blen - 4:
                    raise CaptureFormatError(
                        f"{self.name}: corrupt enhanced packet block at byte {start + self._consumed}"
                    )
                data = buf[start + 28 : start + 28 + incl]
                yield self._packet(iface_id, (hi << 32) | lo, incl, orig, data)
            elif btype == BLOCK_IDB:
                self._read_idb(bo, buf, start, blen)
            elif btype == BLOCK_SPB:
                (orig,) = U32[bo].unpack_from(buf, start + 8)
                iface = self._iface(0)
                incl = min(orig, blen - 16, iface.snaplen or orig)
                yield Packet(0, incl, orig, buf[start + 12 : start + 12 + incl], 0, iface.linktype)
                self.count += 1
            elif btype == BLOCK_PB:
                iface_id, _drops, hi, lo, incl, orig = PB_BODY[bo].unpack_from(buf, start + 8)
                if 28 + incl > blen - 4:
                    raise CaptureFormatError(
                        f"{self.name}: corrupt packet block at byte {start + self._consumed}"
                    )
                yield self._packet(
                    iface_id, (hi << 32) | lo, incl, orig, buf[start + 28 : start + 28 + incl]
                )
            # other blocks (NRB, ISB, DSB, custom) carry nothing a packet needs

    def _iface(self, iface_id: int) -> Interface:
        try:
            return self.interfaces[iface_id]
        except IndexError:
            raise CaptureFormatError(
                f"{self.name}: packet {self.count + 1} names interface {iface_id}, "
                f"but the section declares {len(self.interfaces)}"
            ) from None

    def _packet(self, iface_id: int, units: int, incl: int, orig: int, data: bytes) -> Packet:
        iface = self._iface(iface_id)
        self.count += 1
        ts_ns = units * iface.ts_mul // iface.ts_div + iface.ts_offset_ns
        return Packet(ts_ns, incl, orig, data, iface_id, iface.linktype)

    def _read_shb(self) -> str:
        if not self._fill(28):
            raise self._cut_short("a pcapng section header")
        (bom,) = U32["<"].unpack_from(self._buf, self._pos + 8)
        if bom == PCAPNG_BOM:
            bo = "<"
        elif bom == 0x4D3C2B1A:
            bo = ">"
        else:
            raise CaptureFormatError(
                f"{self.name}: corrupt pcapng section header (byte-order magic)"
            )
        _, blen = BLOCK_HEADER[bo].unpack_from(self._buf, self._pos)
        _, major, minor, _ = SHB_BODY[bo].unpack_from(self._buf, self._pos + 8)
        if blen < 28 or blen % 4 or blen > MAX_BLOCK:
            raise CaptureFormatError(f"{self.name}: corrupt pcapng section header (length {blen})")
        if major != 1:
            raise CaptureFormatError(
                f"{self.name}: pcapng section at byte {self.offset} has unsupported version "
                f"{major}.{minor} (after packet {self.count})"
            )
        if not self._fill(blen):
            raise self._cut_short("a pcapng section header")
        self._pos += blen
        self.format = "pcapng"
        self.section += 1
        self.interfaces = []
        self.nanosecond = False
        return bo

    def _read_idb(self, bo: str, buf: bytes, start: int, blen: int) -> None:
        linktype, _, snaplen = IDB_BODY[bo].unpack_from(buf, start + 8)
        iface = Interface(len(self.interfaces), linktype, snaplen)
        for code, value in _options(bo, buf, start + 16, start + blen - 4):
            if code == OPT_IF_NAME:
                iface.name = value.rstrip(b"\0").decode("utf-8", "replace")
            elif code == OPT_IF_TSRESOL and value:
                resol = value[0]
                if resol & 0x80:  # a negative power of two
                    iface.ts_mul, iface.ts_div = 1_000_000_000, 1 << (resol & 0x7F)
                elif resol <= 9:
                    iface.ts_mul, iface.ts_div = 10 ** (9 - resol), 1
                else:
                    iface.ts_mul, iface.ts_div = 1, 10 ** (resol - 9)
            elif code == OPT_IF_TSOFFSET and len(value) == 8:
                (offset,) = struct.unpack(bo + "q", value)
                iface.ts_offset_ns = offset * 1_000_000_000
        self.interfaces.append(iface)
        self.nanosecond = self.nanosecond or iface.ts_mul < 1000 or iface.ts_div > 1


def _options(bo: str, buf: bytes, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    option = OPTION[bo].unpack_from
    while pos + 4 <= end:
        code, length = option(buf, pos)
        if code == OPT_ENDOFOPT:
            return
        value = buf[pos + 4 : pos + 4 + length]
        yield code, value
        pos += 4 + ((length + 3) & ~3)


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


# -- writing -------------------------------------------------------------------------------


class PcapWriter:
    """Write a classic pcap stream (nanosecond magic by default) to a binary stream."""

    def __init__(
        self, out: BinaryIO, linktype: int, snaplen: int = MAX_RECORD, nanosecond: bool = True
    ):
        self.out = out
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        out.write(PCAP_HEADER["<"].pack(magic, 2, 4, 0, 0, snaplen, linktype))
        self._record = PCAP_RECORD["<"].pack

    def write(self, ts_ns: int, data: bytes, wirelen: int | None = None) -> None:
        sec, frac = divmod(ts_ns, 1_000_000_000)
        if not self.nanosecond:
            frac //= 1000
        n = len(data)
        self.out.write(self._record(sec, frac, n, n if wirelen is None else wirelen))
        self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


class PcapngWriter:
    """Write a pcapng section (little-endian, nanosecond interfaces) to a binary stream."""

    def __init__(self, out: BinaryIO, application: str | None = None) -> None:
        from pcaptool import __version__

        self.out = out
        opts = _option(4, (application or f"pcaptool {__version__}").encode())  # shb_userappl
        body = SHB_BODY["<"].pack(PCAPNG_BOM, 1, 0, -1) + opts + b"\0\0\0\0"
        self._block(PCAPNG_SHB, body)
        self.interfaces = 0
        self._epb = EPB_BODY["<"].pack

    def _block(self, btype: int, body: bytes) -> None:
        blen = len(body) + 12
        self.out.write(BLOCK_HEADER["<"].pack(btype, blen) + body + U32["<"].pack(blen))

    def add_interface(
        self, linktype: int, snaplen: int = MAX_RECORD, name: str | None = None
    ) -> int:
        opts = _option(OPT_IF_TSRESOL, b"\x09")
        if name:
            opts = _option(OPT_IF_NAME, name.encode()) + opts
        self._block(BLOCK_IDB, IDB_BODY["<"].pack(linktype, 0, snaplen) + opts + b"\0\0\0\0")
        self.interfaces += 1
        return self.interfaces - 1

    def write(self, iface: int, ts_ns: int, data: bytes, wirelen: int | None = None) -> None:
        n = len(data)
        pad = -n & 3
        blen = 32 + n + pad
        self.out.write(
            BLOCK_HEADER["<"].pack(BLOCK_EPB, blen)
            + self._epb(
                iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, n, n if wirelen is None else wirelen
            )
        )
        self.out.write(data)
        self.out.write(b"\0" * pad + U32["<"].pack(blen))

    def flush(self) -> None:
        self.out.flush()


def _option(code: int, value: bytes) -> bytes:
    return OPTION["<"].pack(code, len(value)) + value + b"\0" * (-len(value) & 3)
