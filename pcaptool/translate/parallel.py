"""Parallel translate: packets sharded by flow to N worker processes.

The main process reads the capture, finds each packet's flow (addresses and, for TCP and
UDP, ports, in an order that is the same for both directions; DNS on port 53 by its
addresses only, so a retry from a new port meets its first try) and sends the packet to
the worker that owns that flow, so reassembly, HTTP and DNS state stay whole inside one
process. Workers translate and serialise; the main process writes their lines either as
they come (`ordered=False`) or in capture order (`ordered=True`).

Ordered output equals single-process output record for record. Two things make that hold:
every worker's periodic work runs at the same packet as the single process's (the main
process broadcasts a tick to the other workers whenever a TCP packet starts a new second
of capture time: the idle-connection sweep; and whenever any packet does: UDP connection
records and DNS timeouts), and the records of their own that several workers produce at
the same packet are merged as the single process writes them: TCP connection records by
the number of their connection's last packet (the order of its flow table, least
recently active first), then UDP ones by their first packet, then DNS timeouts by their
query. Limits that count across flows (table size, total reassembly memory, UDP flows
and pending DNS queries kept) apply per worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pcaptool.capfile.reader import LINKTYPE_ETHERNET, CaptureReader, Packet
from pcaptool.decode import Truncated
from pcaptool.decode.link import ETH_IPV4, ETH_IPV6, FIXED_OFFSETS, VLAN_TPIDS
from pcaptool.decode.table import (
    PROTO_TCP,
    PROTO_UDP,
    TUNNEL_ETHERTYPES,
    TUNNEL_PROTOS,
    TUNNEL_UDP_PORTS,
    endpoints,
    walk,
)
from pcaptool.errors import CaptureFormatError
from pcaptool.translate.fragroute import Fragment, FragmentRouter, fragment_key
from pcaptool.translate.output import PACKET, Output

if TYPE_CHECKING:
    from pcaptool.api import TranslateOptions

U16 = struct.Struct("!H")
PORTS = struct.Struct("!HH")
IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes
IPV6_FRAGMENT = 44
DNS_PORT = 53  # DNS queries shard by addresses only: a retry's new port links to its try
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ on Linux; spelled out for clarity)
BATCH = 512
MAX_OUTSTANDING = 6  # batches in flight per worker before the reader waits
SWEEP, EXPIRE = 1, 2  # what a tick asks: sweep idle TCP connections; expire UDP and DNS


def flow_of(linktype: int, data: bytes) -> tuple[object, bool]:
    """(a direction-independent flow key, is TCP) of a packet, from its headers only.

    The plain cases (Ethernet with its tags or a fixed link header, IPv4/IPv6, TCP/UDP)
    are read here directly; anything the dispatch tables say carries another packet
    (MPLS, PPPoE, GRE, IP-in-IP, VXLAN, Geneve) goes through the decoders' own walk, so
    a tunnelled connection lands on one worker by its inner addresses."""
    try:
        if linktype == LINKTYPE_ETHERNET:
            etype = U16.unpack_from(data, 12)[0]
            off = 14
            while etype in VLAN_TPIDS:
                etype = U16.unpack_from(data, off + 2)[0]
                off += 4
            if etype != ETH_IPV4 and etype != ETH_IPV6:
                return _walked(linktype, data) if etype in TUNNEL_ETHERTYPES else (None, False)
        else:
            off = FIXED_OFFSETS.get(linktype)
            if off is None:
                return None, False
        v = data[off] >> 4
        if v == 4:
            ihl = (data[off] & 15) * 4
            proto = data[off + 9]
            src = data[off + 12 : off + 16]
            dst = data[off + 16 : off + 20]
            frag = U16.unpack_from(data, off + 6)[0] & 0x3FFF
            p = off + ihl
            if frag:  # MF or an offset: every fragment of a datagram to one worker
                dgram = (4, src, dst, data[off + 4 : off + 6], proto)
                return fragment_key(data, dgram, frag & 0x1FFF, p)
            if proto != PROTO_TCP and proto != PROTO_UDP:
                if proto in TUNNEL_PROTOS:
                    return _walked(linktype, data)
                return (src, dst) if src < dst else (dst, src), False
        elif v == 6:
            proto = data[off + 6]
            src = data[off + 8 : off + 24]
            dst = data[off + 24 : off + 40]
            p = off + 40
            while proto in IPV6_EXT:
                proto = data[p]
                p += (data[p + 1] + 1) * 8
            if proto == IPV6_FRAGMENT:
                word = U16.unpack_from(data, p + 2)[0]
                if word & 0xFFF9:
                    dgram = (6, src, dst, data[p + 4 : p + 8], 0)
                    return fragment_key(data, dgram, word & 0xFFF8, p + 8, data[p])
                proto = data[p]
                p += 8
            if proto != PROTO_TCP and proto != PROTO_UDP:
                if proto in TUNNEL_PROTOS:
                    return _walked(linktype, data)
                return (src, dst) if src < dst else (dst, src), False
        else:
            return _walked(linktype, data)
        sport, dport = PORTS.unpack_from(data, p)
        if proto == PROTO_UDP and (sport in TUNNEL_UDP_PORTS or dport in TUNNEL_UDP_PORTS):
            return _walked(linktype, data)
        if sport == DNS_PORT or dport == DNS_PORT:  # retries (new ports) on the same worker
            key = ("dns", src, dst) if src < dst else ("dns", dst, src)
            return key, proto == PROTO_TCP and len(data) >= p + 20
        a = (src, sport)
        b = (dst, dport)
        key = (proto, a, b) if a < b else (proto, b, a)
        return key, proto == PROTO_TCP and len(data) >= p + 20
    except (IndexError, struct.error):
        return None, False


def _walked(linktype: int, data: bytes) -> tuple[object, bool]:
    """flow_of by the full decoders: the innermost packet's endpoints."""
    rec: dict = {}
    with contextlib.suppress(Truncated):
        walk(data, linktype, rec)
    ends = endpoints(rec)
    if ends is None:
        return None, False
    proto, src, dst, sport, dport = ends
    if sport == DNS_PORT or dport == DNS_PORT:
        key = ("dns", src, dst) if src < dst else ("dns", dst, src)
        return key, proto == PROTO_TCP and "seq" in rec.get("tcp", ())
    a, b = (src, sport or 0), (dst, dport or 0)
    key = (proto, a, b) if a < b else (proto, b, a)
    return key, proto == PROTO_TCP and "seq" in rec.get("tcp", ())


def _worker(conn, name: str, options: TranslateOptions, reduce=None) -> None:
    """Translate batches of packets; answer each batch with (lines, ends, keyed): the
    NDJSON lines of every message joined, where each message's lines end, and for the
    messages that produced connection records, each record's (sort key, length)."""
    tr = options.translator(name)
    an = tr.analyzer
    translate = tr.translate
    from pcaptool.record.ndjson import encode as encode_whole

    def encode(rec: dict) -> bytes:  # at the --verbosity asked (record/verbosity.py)
        return encode_whole(rec if reduce is None else reduce(rec))

    while True:
        batch = conn.recv()
        if batch is None:
            break
        parts: list[bytes] = []
        ends: list[int] = []
        keyed: dict[int, list] = {}
        pos = 0
        for idx, m in enumerate(batch):
            if len(m) == 3:  # a tick (num, ts, what) or ("finish", last TCP ts, last ts)
                recs = _tick(tr, an, m)
                if recs:
                    pos = _own(recs, keyed.setdefault(idx, []), parts, pos, encode)
                ends.append(pos)
                continue
            num, ts, caplen, wirelen, data, iface, linktype, iname = m
            rec = translate(num, Packet(ts, caplen, wirelen, data, iface, linktype), iname)
            line = encode(rec)
            parts.append(line)
            pos += len(line)
            if (an is not None and an.pending) or tr.pending:
                recs = tr.with_outcomes(an.take_records()) if an is not None else []
                recs += tr.take_pending()
                ks = keyed[idx] = [(PACKET, len(line))]
                pos = _own(recs, ks, parts, pos, encode)
            ends.append(pos)
        conn.send((b"".join(parts), ends, keyed))
    conn.close()


def _own(recs: list[dict], ks: list, parts: list[bytes], pos: int, encode) -> int:
    """Encode records of their own after a message's lines; their sort keys in `ks`."""
    for r in recs:
        b = encode(r)
        parts.append(b)
        pos += len(b)
        ks.append((_order(r), len(b)))
    return pos


def _tick(tr, an, m: tuple) -> list[dict]:
    """The records a tick makes: idle TCP connections swept, UDP flows and DNS queries
    expired; or, at the end of the input, every record still held."""
    if m[0] == "finish":
        recs = []
        if an is not None:
            recs = tr.with_outcomes(an.finish(m[1]))
            _warn_limits(an)
        return recs + tr.finish(m[2])
    _num, ts, what = m
    recs = tr.with_outcomes(an.sweep(ts)) if what & SWEEP else []
    if what & EXPIRE:
        tr.expire(ts)
        recs += tr.take_pending()
    return recs


def _order(rec: dict) -> tuple[int, int]:
    """Where a record of its own goes among those several workers make at one packet:
    the single process writes the packet's record, then TCP connection records (by
    their last packet), UDP ones (by their first: the order they were seen in), then
    DNS timeouts (by their query)."""
    c = rec.get("conn")
    if c is not None:
        return (1, c["last_num"]) if c.get("proto") == "tcp" else (2, c["first_num"])
    d = rec.get("dns")
    if d is not None and "outcome" in d:
        return (3, d["query"]["num"])
    return (1, -1)  # an HTTP record the end of the input flushed, before the connections


def _warn_limits(an) -> None:
    from pcaptool.log import log

    warning = an.limits_warning()
    if warning is not None:
        log(**warning)


class _Duplex:
    """A reading and a writing pipe end used as one connection."""

    def __init__(self, r, w) -> None:
        self.recv = r.recv
        self.send = w.send
        self._ends = (r, w)

    def close(self) -> None:
        for c in self._ends:
            c.close()


class _Pool:
    def __init__(self, workers, name, options: TranslateOptions, output: Output, reduce=None):
        ctx = multiprocessing.get_context("fork")
        self.conns = []
        self.procs = []
        self.threads = []
        for w in range(workers):
            # one pipe each way, enlarged so a worker's result batch rarely has to wait
            # for the receiving thread (Linux F_SETPIPE_SZ; 1 MiB is the unprivileged max)
            in_r, in_w = ctx.Pipe(duplex=False)
            out_r, out_w = ctx.Pipe(duplex=False)
            for c in (in_w, out_w):
                with contextlib.suppress(OSError, AttributeError):
                    fcntl.fcntl(c.fileno(), F_SETPIPE_SZ, 1 << 20)
            child = _Duplex(in_r, out_w)
            parent = _Duplex(out_r, in_w)
            p = ctx.Process(target=_worker, args=(child, name, options, reduce), daemon=True)
            p.start()
            in_r.close()
            out_w.close()
            t = threading.Thread(target=_pump, args=(parent, w, output), daemon=True)
            t.start()
            self.conns.append(parent)
            self.procs.append(p)
            self.threads.append(t)

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                c.send(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        for t in self.threads:
            t.join(timeout=10)


def _pump(conn, w: int, output: Output) -> None:
    """Receive one worker's result batches and hand them to the output."""
    while True:
        try:
            got = conn.recv()
        except (EOFError, OSError):
            output.failed(RuntimeError("a translate worker ended unexpectedly"))
            return
        output.result(w, got)


def translate_parallel(
    reader: Iterable[Packet],
    name: str,
    write: Callable[[bytes], object],
    workers: int,
    ordered: bool,
    options: TranslateOptions,
    flush: Callable[[], object] = lambda: None,
    reduce: Callable[[dict], dict] | None = None,
) -> None:
    """Translate `reader`'s packets with `workers` processes, writing NDJSON lines."""
    output = Output(write, flush, workers, ordered)
    pool = _Pool(workers, name, options, output, reduce)
    # The reading thread is busy in Python; the threads that receive results must not
    # wait the default 5 ms for the GIL at each chunk, or the workers stall on their sends.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        _run(pool, output, reader, workers, ordered, options.http)
    finally:
        sys.setswitchinterval(interval)
        pool.close()


class _Ticks:
    """What the other workers do at a packet, because the single process does it there:
    sweep idle TCP connections (a TCP packet starts a second of capture time, with the
    TCP analysis), expire UDP flows and DNS queries (any packet starts a second)."""

    __slots__ = ("sweeps", "tcp_sec", "next_expiry", "last_tcp_ts", "last_ts")

    def __init__(self, sweeps: bool) -> None:
        self.sweeps = sweeps
        self.tcp_sec = -1
        self.next_expiry = 0
        self.last_tcp_ts = 0
        self.last_ts: int | None = None

    def at(self, ts: int, is_tcp: bool) -> int:
        """SWEEP | EXPIRE, either or neither, for a packet at capture time `ts`."""
        self.last_ts = ts
        what = 0
        if ts >= self.next_expiry:
            self.next_expiry = (ts // 1_000_000_000 + 1) * 1_000_000_000
            what = EXPIRE
        if is_tcp and self.sweeps:
            self.last_tcp_ts = ts
            if ts // 1_000_000_000 > self.tcp_sec:
                self.tcp_sec = ts // 1_000_000_000
                what |= SWEEP
        return what


def _run(pool: _Pool, output: Output, reader, workers: int, ordered: bool, ticks: bool) -> None:
    batches: list[list] = [[] for _ in range(workers)]
    log = output.log
    conns = pool.conns
    clock = _Ticks(ticks)

    def send(w: int) -> None:
        with output.cond:
            output.outstanding[w] += 1
        conns[w].send(batches[w])
        batches[w] = []
        output.wait(w, MAX_OUTSTANDING)

    def send_all() -> None:
        # the reader may block next (a live capture): what is batched goes out now
        for v in range(workers):
            if batches[v]:
                send(v)

    broken = None
    fragments = FragmentRouter()
    if isinstance(reader, CaptureReader):
        ifaces = reader.interfaces
        reader.before_read = send_all
    else:
        ifaces = []
    try:
        for num, pkt in enumerate(reader, 1):
            key, is_tcp = flow_of(pkt.linktype, pkt.data)
            if key.__class__ is Fragment:
                key = fragments.route(key)
            w = hash(key) % workers if key is not None else 0
            ts = pkt.ts_ns
            what = clock.at(ts, is_tcp)
            if what:
                tick = (num, ts, what)
                for v in range(workers):
                    if v != w:
                        batches[v].append(tick)
                if ordered:
                    log.append((w, *[v for v in range(workers) if v != w]))
            elif ordered:
                log.append(w)
            i = pkt.iface
            if ifaces is not reader.interfaces:
                ifaces = reader.interfaces  # a new pcapng section
            b = batches[w]
            b.append(
                (
                    num,
                    ts,
                    pkt.caplen,
                    pkt.wirelen,
                    pkt.data,
                    i,
                    pkt.linktype,
                    ifaces[i].name if i < len(ifaces) else None,
                )
            )
            if len(b) >= BATCH:
                send(w)
    except CaptureFormatError as exc:
        broken = exc  # write every record before the break, then report it
    fin = ("finish", clock.last_tcp_ts, clock.last_ts)
    for v in range(workers):
        batches[v].append(fin)
    if ordered:
        log.append(tuple(range(workers)))
    send_all()
    output.wait(None, 0)
    if broken is not None:
        raise broken
