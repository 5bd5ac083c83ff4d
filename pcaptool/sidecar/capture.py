"""Live capture with pcapy-ng: interface selection, handles, the read loop, the ready file.

The read loop never blocks in libpcap: every handle is non-blocking and the loop waits in
`select()` on the handles' descriptors plus a self-pipe that SIGTERM/SIGINT write to
(`signal.set_wakeup_fd`), with a timeout that also serves `--duration` and
`--resolve-every`. libpcap's own read timeout is not relied on: with TPACKET_V3 a blocking
`next()`/`dispatch()` can wait forever when nothing matches the filter.

Timestamps: pcapy-ng exposes microseconds only (no `pcap_set_tstamp_precision`), so pcap
output uses the microsecond magic and pcapng stores microseconds x 1000 at 1 ns resolution.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pcaptool.capfile.reader import (
    BLOCK_EPB,
    LINKTYPE_NAMES,
    PCAP_RECORD,
    PcapngWriter,
    PcapWriter,
)
from pcaptool.errors import PcapToolError, UsageError
from pcaptool.log import log
from pcaptool.signals import StopSignals

DEFAULT_READY_FILE = "/tmp/pcaptool/ready"
DEFAULT_SNAPLEN = 65536
# libpcap refuses larger snapshot lengths on Linux (MAXIMUM_SNAPLEN in pcap-int.h).
MAX_SNAPLEN = 262144
IFF_LOOPBACK = 0x8
SELECT_TICK = 0.25  # seconds: how often the loop looks at the clock with no packets
SYS_CLASS_NET = Path("/sys/class/net")
# pcapng enhanced packet block head: type, length, interface, ts high, ts low, caplen, wirelen
EPB_HEAD = struct.Struct("<IIIIIII")
U32_LE = struct.Struct("<I").pack
_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")


def is_loopback(name: str) -> bool:
    try:
        flags = int((SYS_CLASS_NET / name / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return name == "lo"
    return bool(flags & IFF_LOOPBACK)


def network_interfaces() -> list[str]:
    """Capturable network interfaces, sorted (libpcap's list minus `any` and non-netdevs)."""
    import pcapy

    try:
        devs = pcapy.findalldevs()
    except pcapy.PcapError as exc:
        raise PcapToolError(f"cannot list interfaces: {exc}") from None
    # findalldevs also lists pseudo devices (nflog, dbus-system, bluetooth-monitor ...).
    return sorted(d for d in devs if d != "any" and (SYS_CLASS_NET / d).exists())


def iface_matches(prefix: str, name: str) -> bool:
    """Whether `name` is one of the interfaces `prefix` selects, as the reference finds them.

    The reference's pattern is ``^(ipvlan-)?PREFIX[0-9]``: `eth` selects eth0, eth1 and
    ipvlan-eth0 (Cloud Run gen2, GKE with ipvlan), not eth-foo nor ethernet. A full name
    (`lo`, `veth-a1`) selects that interface alone.
    """
    if name == prefix:
        return True
    return re.match(rf"(?:ipvlan-)?{re.escape(prefix)}[0-9]", name) is not None


def match_interfaces(prefix: str, names: list[str], is_lo=is_loopback, loopback=False):
    """The names `prefix` selects; loopbacks only when asked or when `prefix` names them."""
    want_lo = loopback or prefix.startswith("lo")
    return [n for n in names if iface_matches(prefix, n) and (want_lo or not is_lo(n))]


def select_interfaces(prefix: str, loopback: bool = False) -> list[str]:
    """Every interface `prefix` selects (see iface_matches), or ["any"].

    Loopback interfaces are left out unless `loopback` is set or the prefix names them
    (`lo`). No match is a usage error that lists the interfaces there are.
    """
    if not prefix:
        raise UsageError("--iface: an interface prefix is required (e.g. eth, ens, any)")
    if prefix == "any":
        return ["any"]
    names = network_interfaces()
    matched = match_interfaces(prefix, names, loopback=loopback)
    if not matched:
        raise UsageError(
            f"no interface matches the prefix {prefix!r}; interfaces here: "
            f"{', '.join(names) or 'none'} (or 'any')"
        )
    return matched


@dataclass
class CaptureOptions:
    interfaces: list[str]
    snaplen: int = DEFAULT_SNAPLEN
    count: int = 0  # 0 = no limit
    duration: float = 0  # seconds, 0 = no limit
    buffer_size: int = 0  # bytes, 0 = libpcap's default (2 MiB)
    promisc: bool = True
    fmt: str | None = None  # "pcap" | "pcapng" | None (pcap for one interface)
    compat: bool = False  # filter in user space, on each packet
    ready_file: str | None = DEFAULT_READY_FILE
    resolve_every: float = 0  # seconds, 0 = resolve once
    engine: str = "auto"  # "auto": libpcap's own dump loop where possible; "pcapy": always pcapy


@dataclass
class HandleStats:
    name: str
    linktype: int
    received: int = 0
    dropped: int = 0
    ifdropped: int = 0
    written: int = 0


@dataclass
class CaptureResult:
    written: int = 0
    interfaces: list[HandleStats] = field(default_factory=list)
    reason: str = "signal"

    def as_log_fields(self) -> dict[str, object]:
        return {
            "packets_written": self.written,
            "packets_received": sum(s.received for s in self.interfaces),
            "packets_dropped_kernel": sum(s.dropped for s in self.interfaces),
            "packets_dropped_interface": sum(s.ifdropped for s in self.interfaces),
            "stopped_by": self.reason,
            "interfaces": [
                {
                    "name": s.name,
                    "linktype": LINKTYPE_NAMES.get(s.linktype, s.linktype),
                    "received": s.received,
                    "dropped": s.dropped,
                    "ifdropped": s.ifdropped,
                    "written": s.written,
                }
                for s in self.interfaces
            ],
        }


def validate_options(opts: CaptureOptions) -> None:
    if opts.snaplen <= 0:
        raise UsageError(
            f"--snaplen must be 0 (the whole packet, {MAX_SNAPLEN}) or 1-{MAX_SNAPLEN} "
            f"(got {opts.snaplen})"
        )
    if opts.snaplen > MAX_SNAPLEN:
        raise UsageError(f"--snaplen must be at most {MAX_SNAPLEN} (got {opts.snaplen})")
    if opts.count < 0 or opts.duration < 0 or opts.buffer_size < 0 or opts.resolve_every < 0:
        raise UsageError(
            "--count, --duration, --buffer-size and --resolve-every cannot be negative"
        )
    if opts.fmt not in (None, "pcap", "pcapng"):
        raise UsageError(f"--format must be pcap or pcapng (got {opts.fmt!r})")
    if opts.fmt == "pcap" and len(opts.interfaces) > 1:
        raise UsageError(
            f"--format pcap holds one interface, but {len(opts.interfaces)} match "
            f"({', '.join(opts.interfaces)}): use --format pcapng, or a narrower --iface"
        )


def open_handle(name: str, opts: CaptureOptions):
    """An activated, non-blocking pcapy handle on one interface."""
    import pcapy

    try:
        handle = pcapy.create(name)
        handle.set_snaplen(opts.snaplen)
        handle.set_promisc(1 if opts.promisc else 0)
        handle.set_timeout(100)
        if opts.buffer_size:
            handle.set_buffer_size(opts.buffer_size)
        status = handle.activate()
    except pcapy.PcapError as exc:
        raise PcapToolError(f"cannot open interface {name}: {exc}") from None
    if status < 0:
        # pcap_activate(3PCAP) error codes; -5 = no such device, -8 = permission denied.
        reasons = {-5: "no such device", -8: "permission denied (run as root / CAP_NET_RAW)"}
        reasons[-9] = "interface is not up"
        raise PcapToolError(
            f"cannot open interface {name}: {reasons.get(status, f'libpcap error {status}')}"
        )
    handle.setnonblock(1)
    return handle


class ReadyFile:
    """The readiness signal: exists while every handle is open with its filter applied."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.created = False

    def create(self, **info: object) -> None:
        if not self.path:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"pid": os.getpid(), **info}) + "\n")
            os.replace(tmp, self.path)  # appears whole or not at all
        except OSError as exc:
            raise PcapToolError(f"cannot create ready file {self.path}: {exc.strerror}") from None
        self.created = True

    def remove(self) -> None:
        if self.path and self.created:
            self.created = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def run_capture(
    opts: CaptureOptions,
    out: BinaryIO,
    expression: str,
    refresh: Callable[[], str | None] | None = None,
) -> CaptureResult:
    """Capture until --count, --duration, a signal or a closed output; return the stats.

    `expression` is applied as the kernel filter, or per packet in user space in compat
    mode. `refresh()` (called every `opts.resolve_every` seconds) returns a new expression
    when re-resolved host names changed it; it is then applied to every handle.
    """
    import pcapy

    validate_options(opts)
    result = CaptureResult()
    ready = ReadyFile(opts.ready_file)
    handles = []
    fast = _dump_library(opts, out)
    # Signals are caught from here on: a SIGTERM while handles open ends capture cleanly.
    # restart: a write blocked inside libpcap's C dump loop (slow reader on a pipe) resumes
    # instead of failing half-way; select() still wakes on stop.fd.
    with StopSignals(restart=True, ignore_repeats=True) as stop:
        try:
            for name in opts.interfaces:
                if fast is not None:
                    from pcaptool.capfile.dump import DumpHandle

                    handle = DumpHandle(
                        fast, name, opts.snaplen, opts.promisc, opts.buffer_size, out.fileno()
                    )
                else:
                    handle = open_handle(name, opts)
                handles.append(handle)
                result.interfaces.append(HandleStats(name, handle.datalink()))
            programs = _apply_filter(handles, result.interfaces, expression, opts)
            fmt = opts.fmt or ("pcapng" if len(handles) > 1 else "pcap")
            out.flush()
            if fast is not None:
                handles[0].start_dump()  # libpcap writes the header and every record
                handles[0].flush()
                writers = [None]
            else:
                writers = _writers(out, fmt, result.interfaces, opts.snaplen)
                out.flush()
            ready.create(interfaces=opts.interfaces, filter=expression, compat=opts.compat)
            log(
                "INFO",
                "capture started",
                interfaces=opts.interfaces,
                filter=expression,
                compat=opts.compat,
                format=fmt,
                snaplen=opts.snaplen,
                engine="libpcap-dump" if fast is not None else "pcapy",
            )
            try:
                _loop(opts, out, handles, writers, programs, result, stop, refresh)
            except BrokenPipeError:
                # `capture | head`: the reader left; what it read is whole, stop quietly.
                result.reason = "output closed"
        finally:
            ready.remove()
            result.written = sum(st.written for st in result.interfaces)
            for handle, stats in zip(handles, result.interfaces, strict=False):
                with contextlib.suppress(pcapy.PcapError, PcapToolError):
                    stats.received, stats.dropped, stats.ifdropped = handle.stats()
                handle.close()
    return result


def _dump_library(opts: CaptureOptions, out: BinaryIO):
    """libpcap for the C dump loop when it can do the job: one handle, pcap, kernel filter."""
    if opts.engine == "pcapy" or opts.compat or len(opts.interfaces) != 1:
        return None
    if opts.fmt not in (None, "pcap"):
        return None
    try:
        out.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    from pcaptool.capfile.dump import load

    return load()


def _apply_filter(handles, stats: list[HandleStats], expression: str, opts: CaptureOptions):
    """Kernel filters on each handle, or (compat) one compiled program per handle."""
    import pcapy

    programs = []
    for handle, st in zip(handles, stats, strict=True):
        try:
            if opts.compat:
                programs.append(pcapy.compile(st.linktype, opts.snaplen, expression, 1, 0))
            elif expression:
                handle.setfilter(expression)
        except pcapy.PcapError as exc:
            raise UsageError(f"invalid filter expression for {st.name}: {exc}") from None
    return programs if opts.compat and expression else None


def _writers(out: BinaryIO, fmt: str, stats: list[HandleStats], snaplen: int):
    """One write function per handle: (ts_sec, ts_usec, data, wirelen) -> None."""
    if fmt == "pcap":
        writer = PcapWriter(out, stats[0].linktype, snaplen=snaplen, nanosecond=False)
        return [writer]
    writer = PcapngWriter(out)
    ids = [writer.add_interface(s.linktype, snaplen=snaplen, name=s.name) for s in stats]
    return [(writer, i) for i in ids]


def _loop(opts, out, handles, writers, programs, result, stop, refresh) -> None:
    import pcapy

    fds = {handle.getfd(): i for i, handle in enumerate(handles)}
    wait_fds = [*fds, stop.fd]
    now = time.monotonic()
    deadline = now + opts.duration if opts.duration else None
    next_resolve = now + opts.resolve_every if (opts.resolve_every and refresh) else None
    stats = result.interfaces
    remaining = opts.count or -1
    callbacks = [
        None if w is None else _callback(w, programs[i] if programs else None, stats[i], out)
        for i, w in enumerate(writers)
    ]
    while True:
        if stop.signal is not None:
            result.reason = signal.Signals(stop.signal).name
            _drain(opts, out, handles, callbacks, stats, result)
            return
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            result.reason = "duration"
            _drain(opts, out, handles, callbacks, stats, result)
            return
        if next_resolve is not None and now >= next_resolve:
            next_resolve = now + opts.resolve_every
            _refresh_filter(handles, stats, opts, refresh, programs, callbacks, writers, out)
        timeout = SELECT_TICK
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - now))
        try:
            readable, _, _ = select.select(wait_fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        wrote = False
        for fd in readable:
            if fd == stop.fd:
                stop.drain()
                continue
            i = fds[fd]
            try:
                # A count of -1 reads one buffer's worth; bounded by --count otherwise.
                n = handles[i].dispatch(remaining if opts.count else -1, callbacks[i])
            except pcapy.PcapError as exc:
                raise PcapToolError(f"capture on {stats[i].name} failed: {exc}") from None
            if n:
                wrote = True
                if callbacks[i] is None:  # libpcap dumped them itself
                    stats[i].written += n
                result.written = sum(st.written for st in stats)
            if opts.count and result.written >= opts.count:
                _flush(out, handles)
                result.reason = "count"
                return
            if opts.count:
                remaining = opts.count - result.written
        if wrote:
            _flush(out, handles)  # per select batch, so `capture | translate` is live


def _drain(opts, out, handles, callbacks, stats, result) -> None:
    """On stop, write what the kernel already handed over (one non-blocking read each)."""
    for i, handle in enumerate(handles):
        remaining = opts.count - result.written if opts.count else -1
        if remaining == 0:
            break
        with contextlib.suppress(Exception):
            n = handle.dispatch(remaining, callbacks[i])
            if n > 0 and callbacks[i] is None:
                stats[i].written += n
            result.written = sum(st.written for st in stats)
    _flush(out, handles)


def _flush(out: BinaryIO, handles) -> None:
    out.flush()
    for handle in handles:
        if hasattr(handle, "flush"):
            handle.flush()


def _callback(writer, program, stats: HandleStats, out: BinaryIO):
    """The per-packet function handed to dispatch(): filter (compat mode) and write.

    Kept small: at 50,000 packets/s this body is most of the capture's CPU time.
    """
    match = program.filter if program is not None else None
    if isinstance(writer, tuple):
        # An enhanced packet block in two writes (PcapngWriter.write's layout, inlined:
        # this runs once per packet).
        iface = writer[1]
        epb = EPB_HEAD.pack
        write = out.write

        def on_packet(hdr, data: bytes) -> None:
            if match is not None and not match(data):
                return
            sec, usec = hdr.getts()
            ts = sec * 1_000_000_000 + usec * 1000
            n = len(data)
            pad = -n & 3
            blen = 32 + n + pad
            write(epb(BLOCK_EPB, blen, iface, ts >> 32, ts & 0xFFFFFFFF, n, hdr.getlen()))
            write(data + _PADDING[pad] + U32_LE(blen))
            stats.written += 1

        return on_packet
    record = PCAP_RECORD["<"].pack
    write = out.write

    def on_packet_pcap(hdr, data: bytes) -> None:
        if match is not None and not match(data):
            return
        sec, usec = hdr.getts()
        write(record(sec, usec, len(data), hdr.getlen()))
        write(data)
        stats.written += 1

    return on_packet_pcap


def _refresh_filter(handles, stats, opts, refresh, programs, callbacks, writers, out) -> None:
    """Re-resolve host names; when the expression changed, apply it to every handle."""
    import pcapy

    try:
        expression = refresh()
    except PcapToolError as exc:
        # A failed lookup keeps the filter in force: better stale than capturing everything.
        log("WARNING", f"re-resolution failed, filter kept: {exc}")
        return
    if expression is None:
        return
    try:
        if opts.compat:
            for i, st in enumerate(stats):
                programs[i] = pcapy.compile(st.linktype, opts.snaplen, expression, 1, 0)
                callbacks[i] = _callback(writers[i], programs[i], st, out)
        else:
            for handle in handles:
                handle.setfilter(expression)
    except (pcapy.PcapError, PcapToolError) as exc:
        log("ERROR", f"new filter refused, old one kept: {exc}", filter=expression)
        return
    log("NOTICE", "filter updated after re-resolving host names", filter=expression)
