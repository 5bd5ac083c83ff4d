"""A read filter: the BPF expression `tcpdump -r FILE EXPR` applies, on packets as read.

The expression is compiled by libpcap once per link type met, so a pcapng file whose
interfaces differ in link type is filtered as tcpdump filters each.

libpcap compiles some expressions differently for a savefile than for a live handle: on
BSD loopback (DLT_NULL/LOOP) captures, `ip6` tests every BSD AF_INET6 value (24, 28, 30)
for a file but only the host's (10 on Linux) for a live handle. So the program is compiled
on a savefile handle (a header-only pcap of that link type, in this host's byte order), by
the machine's libpcap (the one tcpdump uses) through its stable C API; without one, by
pcapy-ng's bundled libpcap on a dead handle (the same everywhere except that DLT_NULL case).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterable, Iterator
from functools import lru_cache

from pcaptool.capfile.reader import Packet
from pcaptool.errors import UsageError

# tcpdump's snap length for -s 0, and what it compiles offline filters with
WHOLE_PACKET = 262144


def check_expression(expression: str, linktype: int = 1) -> None:
    """Refuse a bad expression before any input is read (one line, exit 2)."""
    _compile(expression, linktype)


class _Header(ctypes.Structure):  # struct pcap_pkthdr
    _fields_ = [
        ("sec", ctypes.c_long),
        ("usec", ctypes.c_long),
        ("caplen", ctypes.c_uint32),
        ("len", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):  # struct bpf_program
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


@lru_cache(maxsize=1)
def _libpcap():
    name = ctypes.util.find_library("pcap")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.pcap_open_offline.restype = ctypes.c_void_p
    lib.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    lib.pcap_compile.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_Program),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    ]
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_offline_filter.argtypes = [
        ctypes.POINTER(_Program),
        ctypes.POINTER(_Header),
        ctypes.c_char_p,
    ]
    return lib


class _SystemProgram:
    """A program compiled by the machine's libpcap; kept for the life of the filter."""

    def __init__(self, lib, expression: str, linktype: int) -> None:
        self.lib = lib
        self.prog = _Program()
        self.header = _Header()
        handle = _savefile_handle(lib, linktype)
        try:
            if lib.pcap_compile(handle, self.prog, expression.encode(), 1, 0xFFFFFFFF) != 0:
                why = lib.pcap_geterr(handle).decode(errors="replace")
                raise UsageError(f"bad filter expression {expression!r}: {why}")
        finally:
            lib.pcap_close(handle)  # the compiled program does not need its handle

    def matches(self, data: bytes, wirelen: int) -> bool:
        self.header.caplen = len(data)
        self.header.len = max(wirelen, len(data))
        return self.lib.pcap_offline_filter(self.prog, self.header, data) != 0


def _savefile_handle(lib, linktype: int):
    import os
    import struct
    import tempfile

    fd, path = tempfile.mkstemp(prefix=".pcaptool-bpf-", suffix=".pcap")
    try:
        os.write(fd, struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, WHOLE_PACKET, linktype))
        os.close(fd)
        errbuf = ctypes.create_string_buffer(256)
        handle = lib.pcap_open_offline(path.encode(), errbuf)
    finally:
        os.unlink(path)
    if not handle:
        raise UsageError(f"link type {linktype}: {errbuf.value.decode(errors='replace')}")
    return handle


class _PcapyProgram:
    def __init__(self, expression: str, linktype: int) -> None:
        import pcapy

        try:
            self.prog = pcapy.compile(linktype, WHOLE_PACKET, expression, 1, 0xFFFFFFFF)
        except pcapy.PcapError as exc:
            raise UsageError(f"bad filter expression {expression!r}: {exc}") from None

    def matches(self, data: bytes, wirelen: int) -> bool:
        return self.prog.filter(data) != 0


def _compile(expression: str, linktype: int):
    lib = _libpcap()
    if lib is not None:
        return _SystemProgram(lib, expression, linktype)
    return _PcapyProgram(expression, linktype)


class ReadFilter:
    """Keeps the packets a BPF expression matches; `None` or '' keeps all."""

    def __init__(self, expression: str | None) -> None:
        self.expression = (expression or "").strip()
        self._programs: dict[int, object] = {}

    def __bool__(self) -> bool:
        return bool(self.expression)

    def matches(self, pkt: Packet) -> bool:
        prog = self._programs.get(pkt.linktype)
        if prog is None:
            prog = self._programs[pkt.linktype] = _compile(self.expression, pkt.linktype)
        return prog.matches(bytes(pkt.data), pkt.wirelen)


def select_packets(
    packets: Iterable[Packet], expression: str | None = None, count: int = 0
) -> Iterator[Packet]:
    """The packets `expression` keeps, at most `count` of them (0: all), as `tcpdump -c`."""
    keep = ReadFilter(expression)
    kept = 0
    for pkt in packets:
        if keep and not keep.matches(pkt):
            continue
        yield pkt
        kept += 1
        if count and kept >= count:
            return


class FilteredReader:
    """A CaptureReader seen through a read filter and a count: same attributes, fewer packets."""

    def __init__(self, reader, expression: str | None, count: int) -> None:
        self._reader = reader
        self._keep = ReadFilter(expression)
        self._count = count
        self.kept = 0  # packets handed on so far: what is left of a -c shared by files

    def __getattr__(self, name: str):
        return getattr(self._reader, name)

    def __iter__(self) -> Iterator[Packet]:
        keep, count = self._keep, self._count
        for pkt in self._reader:
            if keep and not keep.matches(pkt):
                continue
            self.kept += 1
            yield pkt
            if count and self.kept >= count:
                return
