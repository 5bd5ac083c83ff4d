"""The fast path for one interface to pcap: libpcap reads and writes, Python never sees a packet.

pcapy-ng hands every packet to a Python callback (about 0.7 us each, several times tcpdump's
cost). For the common case, one handle written as classic pcap with a kernel filter, this
module drives the same libpcap that pcapy-ng bundles through `ctypes`: `pcap_dispatch()`
with `pcap_dump()` as the C callback, exactly what tcpdump -w does. It also asks for
nanosecond timestamps (`pcap_set_tstamp_precision`), which pcapy-ng does not expose.

Only what pcapy-ng lacks is bound here; everything else (pcapng, several interfaces,
compat mode) stays on pcapy-ng. `load()` returns None when no libpcap can be loaded,
and the caller falls back to pcapy-ng.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import stat
from functools import cache

from pcaptool.errors import PcapToolError, UsageError

PCAP_ERRBUF_SIZE = 256
PCAP_TSTAMP_PRECISION_NANO = 1
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF


class _Stat(ctypes.Structure):
    _fields_ = [
        ("ps_recv", ctypes.c_uint),
        ("ps_drop", ctypes.c_uint),
        ("ps_ifdrop", ctypes.c_uint),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


@cache
def load() -> ctypes.CDLL | None:
    """The libpcap pcapy-ng bundles (same version as the rest of capture), else the system's."""
    candidates = []
    try:
        import pcapy

        libs = os.path.join(os.path.dirname(os.path.dirname(pcapy.__file__)), "pcapy_ng.libs")
        candidates += sorted(glob.glob(os.path.join(libs, "libpcap*.so*")))
    except ImportError:  # pragma: no cover - pcapy-ng is a dependency
        pass
    system = ctypes.util.find_library("pcap")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        _declare(lib)
        return lib
    return None


def _declare(lib: ctypes.CDLL) -> None:
    p, c_int, c_char_p = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    lib.pcap_create.restype = p
    lib.pcap_create.argtypes = [c_char_p, c_char_p]
    for name in (
        "pcap_set_snaplen",
        "pcap_set_promisc",
        "pcap_set_timeout",
        "pcap_set_buffer_size",
        "pcap_set_tstamp_precision",
    ):
        getattr(lib, name).argtypes = [p, c_int]
    lib.pcap_activate.argtypes = [p]
    lib.pcap_geterr.restype = c_char_p
    lib.pcap_geterr.argtypes = [p]
    lib.pcap_statustostr.restype = c_char_p
    lib.pcap_setnonblock.argtypes = [p, c_int, c_char_p]
    lib.pcap_get_selectable_fd.argtypes = [p]
    lib.pcap_datalink.argtypes = [p]
    lib.pcap_compile.argtypes = [p, ctypes.POINTER(_Program), c_char_p, c_int, ctypes.c_uint32]
    lib.pcap_setfilter.argtypes = [p, ctypes.POINTER(_Program)]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
    lib.pcap_dump_fopen.restype = p
    lib.pcap_dump_fopen.argtypes = [p, p]
    lib.pcap_dispatch.argtypes = [p, c_int, p, p]
    lib.pcap_dump_flush.argtypes = [p]
    lib.pcap_dump_close.argtypes = [p]
    lib.pcap_stats.argtypes = [p, ctypes.POINTER(_Stat)]
    lib.pcap_close.argtypes = [p]
    libc = ctypes.CDLL(None)
    libc.fdopen.restype = p
    libc.fdopen.argtypes = [c_int, c_char_p]
    libc.ferror.argtypes = [p]
    lib.libc = libc  # type: ignore[attr-defined]


class DumpHandle:
    """One live handle whose packets libpcap writes straight to a pcap stream (a file descriptor).

    Mirrors the few pcapy-ng Reader methods the capture loop uses: getfd(), datalink(),
    setfilter(), dispatch(), stats(), close(); plus flush().
    """

    def __init__(
        self,
        lib: ctypes.CDLL,
        name: str,
        snaplen: int,
        promisc: bool,
        buffer_size: int,
        out_fd: int,
    ) -> None:
        self.lib = lib
        self.name = name
        self.nanosecond = False
        err = ctypes.create_string_buffer(PCAP_ERRBUF_SIZE)
        self.p = lib.pcap_create(name.encode(), err)
        self.dumper = None
        self._stream = None
        if not self.p:
            raise PcapToolError(
                f"cannot open interface {name}: {err.value.decode(errors='replace')}"
            )
        lib.pcap_set_snaplen(self.p, snaplen)
        lib.pcap_set_promisc(self.p, 1 if promisc else 0)
        lib.pcap_set_timeout(self.p, 100)
        if buffer_size:
            lib.pcap_set_buffer_size(self.p, buffer_size)
        self.nanosecond = lib.pcap_set_tstamp_precision(self.p, PCAP_TSTAMP_PRECISION_NANO) == 0
        status = lib.pcap_activate(self.p)
        if status < 0:
            detail = (
                lib.pcap_geterr(self.p).decode(errors="replace")
                or lib.pcap_statustostr(status).decode()
            )
            self.close()
            raise PcapToolError(f"cannot open interface {name}: {detail}")
        if lib.pcap_setnonblock(self.p, 1, err) < 0:
            self.close()
            raise PcapToolError(f"cannot open interface {name}: {err.value.decode()}")
        self._out_fd = out_fd
        self._dump = ctypes.cast(lib.pcap_dump, ctypes.c_void_p)

    def start_dump(self) -> None:
        """Write the pcap file header (libpcap's own) and start the dumper on the output."""
        fd = os.dup(self._out_fd)
        stream = self.lib.libc.fdopen(fd, b"wb")
        if not stream:
            os.close(fd)
            raise PcapToolError("cannot open the output for libpcap")
        self._stream = stream
        self.dumper = self.lib.pcap_dump_fopen(self.p, stream)
        if not self.dumper:
            raise PcapToolError(f"cannot write pcap: {self.lib.pcap_geterr(self.p).decode()}")

    def getfd(self) -> int:
        return self.lib.pcap_get_selectable_fd(self.p)

    def datalink(self) -> int:
        return self.lib.pcap_datalink(self.p)

    def setfilter(self, expression: str) -> None:
        prog = _Program()
        if (
            self.lib.pcap_compile(
                self.p, ctypes.byref(prog), expression.encode(), 1, PCAP_NETMASK_UNKNOWN
            )
            < 0
        ):
            raise UsageError(
                f"invalid filter expression for {self.name}: "
                f"{self.lib.pcap_geterr(self.p).decode(errors='replace')}"
            )
        try:
            if self.lib.pcap_setfilter(self.p, ctypes.byref(prog)) < 0:
                raise PcapToolError(
                    f"cannot set the filter on {self.name}: {self.lib.pcap_geterr(self.p).decode()}"
                )
        finally:
            self.lib.pcap_freecode(ctypes.byref(prog))

    def dispatch(self, count: int, _callback: object = None) -> int:
        """Read what is there (at most `count`, -1 = a buffer's worth) and dump it in C."""
        n = self.lib.pcap_dispatch(self.p, count, self._dump, self.dumper)
        if n < 0:
            raise PcapToolError(
                f"capture on {self.name} failed: {self.lib.pcap_geterr(self.p).decode()}"
            )
        return n

    def flush(self) -> None:
        """fflush the output; a failed write (pcap_dump() ignores them) surfaces here."""
        if not self.dumper:
            return
        if self.lib.pcap_dump_flush(self.dumper) < 0 or self.lib.libc.ferror(self._stream):
            if stat.S_ISFIFO(os.fstat(self._out_fd).st_mode) or stat.S_ISSOCK(
                os.fstat(self._out_fd).st_mode
            ):
                raise BrokenPipeError("the capture output was closed")
            raise PcapToolError("writing the capture failed (disk full?)")

    def stats(self) -> tuple[int, int, int]:
        st = _Stat()
        if self.lib.pcap_stats(self.p, ctypes.byref(st)) < 0:
            raise PcapToolError(f"no statistics for {self.name}")
        return st.ps_recv, st.ps_drop, st.ps_ifdrop

    def close(self) -> None:
        if self.dumper:
            self.lib.pcap_dump_flush(self.dumper)
            self.lib.pcap_dump_close(self.dumper)  # fclose: closes only our dup of the fd
            self.dumper = None
        if self.p:
            self.lib.pcap_close(self.p)
            self.p = None
