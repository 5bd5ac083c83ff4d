"""Parallel translate: packets sharded by flow to N worker processes.

The main process reads the capture, finds each packet's flow (addresses and, for TCP and
UDP, ports, in an order that is the same for both directions) and sends the packet to the
worker that owns that flow, so reassembly and HTTP state stay whole inside one process.
Workers translate and serialise; the main process writes their lines either as they come
(`ordered=False`) or in capture order (`ordered=True`).

Ordered output equals single-process output record for record. Two things make that hold:
every worker's idle-connection sweep runs at the same packet as the single process's
(the main process broadcasts a tick to the other workers whenever a TCP packet starts a
new second of capture time), and connection records that several workers produce at the
same packet are merged by the number of their connection's last packet, which is the
order the single process's flow table (least recently active first) yields them in.
Limits that count across flows (table size, total reassembly memory) apply per worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable
from operator import itemgetter

import orjson

from pcaptool.errors import CaptureFormatError
from pcaptool.pcapfile import CaptureReader, Packet

U16 = struct.Struct("!H")
PORTS = struct.Struct("!HH")
VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
IPV6_EXT = (0, 43, 60)
BATCH = 512
MAX_OUTSTANDING = 6  # batches in flight per worker before the reader waits
_OPT = orjson.OPT_APPEND_NEWLINE
_first = itemgetter(0)


def flow_of(linktype: int, data: bytes) -> tuple[object, bool]:
    """(a direction-independent flow key, is TCP) of a packet, from its headers only."""
    try:
        if linktype == 1:
            etype = U16.unpack_from(data, 12)[0]
            off = 14
            while etype in VLAN_TYPES:
                etype = U16.unpack_from(data, off + 2)[0]
                off += 4
            if etype not in (0x0800, 0x86DD):
                return None, False
        elif linktype == 113:
            off = 16
        elif linktype == 276:
            off = 20
        elif linktype in (0, 108):
            off = 4
        elif linktype in (101, 228, 229, 12, 14):
            off = 0
        else:
            return None, False
        v = data[off] >> 4
        if v == 4:
            ihl = (data[off] & 15) * 4
            proto = data[off + 9]
            src = data[off + 12 : off + 16]
            dst = data[off + 16 : off + 20]
            frag = U16.unpack_from(data, off + 6)[0] & 0x1FFF
            p = off + ihl
            if frag or proto not in (6, 17):
                return (src, dst) if src < dst else (dst, src), False
        elif v == 6:
            proto = data[off + 6]
            src = data[off + 8 : off + 24]
            dst = data[off + 24 : off + 40]
            p = off + 40
            while proto in IPV6_EXT:
                proto = data[p]
                p += (data[p + 1] + 1) * 8
            if proto == 44:
                if U16.unpack_from(data, p + 2)[0] & 0xFFF8:
                    return (src, dst) if src < dst else (dst, src), False
                proto = data[p]
                p += 8
            if proto not in (6, 17):
                return (src, dst) if src < dst else (dst, src), False
        else:
            return None, False
        sport, dport = PORTS.unpack_from(data, p)
        a = (src, sport)
        b = (dst, dport)
        key = (proto, a, b) if a < b else (proto, b, a)
        return key, proto == 6 and len(data) >= p + 20
    except (IndexError, struct.error):
        return None, False


def _worker(conn, name: str, analyzer_kw: dict | None) -> None:
    """Translate batches of packets; answer each batch with (lines, ends, keyed): the
    NDJSON lines of every message joined, where each message's lines end, and for the
    messages that produced connection records, each record's (sort key, length)."""
    from pcaptool.tcpapp import HttpAnalyzer
    from pcaptool.translate import Translator

    an = HttpAnalyzer(**analyzer_kw) if analyzer_kw is not None else None
    tr = Translator(name, an)
    translate = tr.translate
    dumps = orjson.dumps
    while True:
        batch = conn.recv()
        if batch is None:
            break
        parts: list[bytes] = []
        ends: list[int] = []
        keyed: dict[int, list] = {}
        pos = 0
        for idx, m in enumerate(batch):
            if len(m) == 2:  # tick: (num, ts) or ("finish", last TCP ts)
                if m[0] == "finish":
                    an._last_ts = m[1] or an._last_ts
                    recs = an.finish()
                else:
                    recs = an.sweep(m[1])
                if recs:
                    ks = keyed[idx] = []
                    for r in recs:
                        b = dumps(r, option=_OPT)
                        parts.append(b)
                        pos += len(b)
                        ks.append((r["conn"]["last_num"], len(b)))
                ends.append(pos)
                continue
            num, ts, caplen, wirelen, data, iface, linktype, iname = m
            rec = translate(num, Packet(ts, caplen, wirelen, data, iface, linktype), iname)
            line = dumps(rec, option=_OPT)
            parts.append(line)
            pos += len(line)
            if an is not None and an._pending:
                ks = keyed[idx] = [(-1, len(line))]
                for r in an.take_records():
                    b = dumps(r, option=_OPT)
                    parts.append(b)
                    pos += len(b)
                    ks.append((r["conn"]["last_num"], len(b)))
            ends.append(pos)
        conn.send((b"".join(parts), ends, keyed))
    conn.close()


class _Pool:
    def __init__(self, workers: int, name: str, analyzer_kw: dict | None) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conns = []
        self.procs = []
        self.queues: list[queue.SimpleQueue] = []
        self.threads = []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, name, analyzer_kw), daemon=True)
            p.start()
            child.close()
            q: queue.SimpleQueue = queue.SimpleQueue()
            t = threading.Thread(target=_pump, args=(parent, q), daemon=True)
            t.start()
            self.conns.append(parent)
            self.procs.append(p)
            self.queues.append(q)
            self.threads.append(t)

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                c.send(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


def _pump(conn, q: queue.SimpleQueue) -> None:
    """Receive a worker's result batches into a queue (a thread per worker)."""
    try:
        while True:
            q.put(conn.recv())
    except (EOFError, OSError):
        q.put(None)


def translate_parallel(
    reader: Iterable[Packet],
    name: str,
    write: Callable[[bytes], object],
    workers: int,
    ordered: bool,
    analyzer_kw: dict | None,
) -> None:
    """Translate `reader`'s packets with `workers` processes, writing NDJSON lines."""
    pool = _Pool(workers, name, analyzer_kw)
    try:
        _run(pool, reader, write, workers, ordered, analyzer_kw is not None)
    finally:
        pool.close()


def _run(pool: _Pool, reader, write, workers: int, ordered: bool, ticks: bool) -> None:
    batches: list[list] = [[] for _ in range(workers)]
    outstanding = [0] * workers
    ready: list[deque] = [deque() for _ in range(workers)]
    log: deque = deque()  # ordered: which workers hold the results of each next message
    conns = pool.conns
    queues = pool.queues
    gsec = -1
    last_tcp_ts = 0

    def take(w: int, block: bool) -> bool:
        q = queues[w]
        try:
            got = q.get() if block else q.get_nowait()
        except queue.Empty:
            return False
        if got is None:
            raise RuntimeError("a translate worker ended unexpectedly")
        outstanding[w] -= 1
        blob, ends, keyed = got
        if not ordered:
            write(blob)
            return True
        view = memoryview(blob)
        r = ready[w]
        start = 0
        for idx, end in enumerate(ends):
            ks = keyed.get(idx)
            if ks is None:
                r.append(view[start:end])
            else:
                items = []
                p = start
                for key, n in ks:
                    items.append((key, view[p : p + n]))
                    p += n
                r.append(items)
            start = end
        return True

    def emit() -> None:
        while log:
            e = log[0]
            if e.__class__ is int:
                r = ready[e]
                if not r:
                    return
                res = r.popleft()
                log.popleft()
                if res.__class__ is list:
                    for _, line in res:
                        write(line)
                else:
                    write(res)
            else:
                for w in e:
                    if not ready[w]:
                        return
                log.popleft()
                items = []
                for w in e:
                    res = ready[w].popleft()
                    if res.__class__ is list:
                        items += res
                    elif len(res):
                        items.append((-1, res))
                items.sort(key=_first)
                for _, line in items:
                    write(line)

    def send(w: int) -> None:
        conns[w].send(batches[w])
        batches[w] = []
        outstanding[w] += 1
        for v in range(workers):
            while take(v, False):
                pass
        while outstanding[w] > MAX_OUTSTANDING:
            take(w, True)
        if ordered:
            emit()

    broken = None
    ifaces = reader.interfaces if isinstance(reader, CaptureReader) else []
    try:
        for num, pkt in enumerate(reader, 1):
            key, is_tcp = flow_of(pkt.linktype, pkt.data)
            w = hash(key) % workers if key is not None else 0
            if is_tcp and ticks:
                ts = pkt.ts_ns
                last_tcp_ts = ts
                if ts // 1_000_000_000 > gsec:
                    gsec = ts // 1_000_000_000
                    tick = (num, ts)
                    for v in range(workers):
                        if v != w:
                            batches[v].append(tick)
                    if ordered:
                        log.append((w, *[v for v in range(workers) if v != w]))
                elif ordered:
                    log.append(w)
            elif ordered:
                log.append(w)
            i = pkt.iface
            if ifaces is not reader.interfaces:
                ifaces = reader.interfaces  # a new pcapng section
            b = batches[w]
            b.append(
                (
                    num,
                    pkt.ts_ns,
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
    if ticks:
        fin = ("finish", last_tcp_ts)
        for v in range(workers):
            batches[v].append(fin)
        if ordered:
            log.append(tuple(range(workers)))
    for v in range(workers):
        if batches[v]:
            send(v)
    for v in range(workers):
        while outstanding[v] > 0:
            take(v, True)
    if ordered:
        emit()
    if broken is not None:
        raise broken
