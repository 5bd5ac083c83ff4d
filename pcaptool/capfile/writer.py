"""Capture file writers: classic pcap and pcapng (little-endian, nanosecond interfaces)."""

from __future__ import annotations

from typing import BinaryIO

from pcaptool.capfile.format import (
    BLOCK_EPB,
    BLOCK_HEADER,
    BLOCK_IDB,
    EPB_HEAD,
    IDB_BODY,
    MAX_RECORD,
    MAX_TS_NS,
    OPT_IF_NAME,
    OPT_IF_TSRESOL,
    OPTION,
    PCAP_HEADER,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PCAP_RECORD,
    PCAPNG_BOM,
    PCAPNG_SHB,
    SHB_BODY,
    U32,
)

PCAP_MAX_SEC = 0xFFFFFFFF


def pcap_time(ts_ns: int, nanosecond: bool) -> tuple[int, int]:
    """ns -> the (seconds, fraction) of a pcap record, clamped to what 32 bits hold."""
    sec, frac = divmod(ts_ns, 1_000_000_000)
    if not 0 <= sec <= PCAP_MAX_SEC:
        sec, frac = (0, 0) if sec < 0 else (PCAP_MAX_SEC, 999_999_999)
    return sec, frac if nanosecond else frac // 1000


class PcapWriter:
    """Write a classic pcap stream (nanosecond magic by default) to a binary stream."""

    def __init__(
        self, out: BinaryIO, linktype: int, snaplen: int = MAX_RECORD, nanosecond: bool = True
    ):
        self.out = out
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        out.write(PCAP_HEADER["<"].pack(magic, 2, 4, 0, 0, snaplen, linktype))
        self._record = PCAP_RECORD["<"].pack

    def write(self, ts_ns: int, data: bytes, wirelen: int | None = None) -> None:
        sec, frac = pcap_time(ts_ns, self.nanosecond)
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

    def _block(self, btype: int, body: bytes) -> None:
        blen = len(body) + 12
        self.out.write(BLOCK_HEADER["<"].pack(btype, blen) + body + U32["<"].pack(blen))

    def add_interface(
        self, linktype: int, snaplen: int = MAX_RECORD, name: str | None = None, tsresol: int = 9
    ) -> int:
        """Declare an interface; its time stamps count units of TSRESOL (9: nanoseconds)."""
        opts = _option(OPT_IF_TSRESOL, bytes([tsresol]))
        if name:
            opts = _option(OPT_IF_NAME, name.encode()) + opts
        self._block(BLOCK_IDB, IDB_BODY["<"].pack(linktype, 0, snaplen) + opts + b"\0\0\0\0")
        self.interfaces += 1
        return self.interfaces - 1

    def write(self, iface: int, ts_ns: int, data: bytes, wirelen: int | None = None) -> None:
        self.out.write(epb_block(iface, ts_ns, data, len(data) if wirelen is None else wirelen))

    def flush(self) -> None:
        self.out.flush()


def _option(code: int, value: bytes) -> bytes:
    return OPTION["<"].pack(code, len(value)) + value + b"\0" * (-len(value) & 3)


_EPB_HEAD = EPB_HEAD.pack
_PCAP_RECORD = PCAP_RECORD["<"].pack
_TAIL = U32["<"].pack


def epb_block(iface: int, ts_ns: int, data: bytes, wirelen: int) -> bytes:
    """One little-endian enhanced packet block; TS_NS (in the interface's units, ns by
    default) is clamped to 64 bits."""
    ts_ns = min(max(ts_ns, 0), MAX_TS_NS)
    n = len(data)
    pad = -n & 3
    blen = 32 + n + pad
    head = _EPB_HEAD(BLOCK_EPB, blen, iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, n, wirelen)
    return head + data + b"\0" * pad + _TAIL(blen)


def pcap_record(ts_ns: int, data: bytes, wirelen: int, nanosecond: bool) -> bytes:
    """One little-endian pcap record: 16-byte header and data."""
    sec, frac = pcap_time(ts_ns, nanosecond)
    return _PCAP_RECORD(sec, frac, len(data), wirelen) + data
