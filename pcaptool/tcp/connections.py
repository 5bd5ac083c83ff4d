"""Connection lifecycle: segments in, reassembled bytes out to the stream analyzers.

`ConnectionTracker.segment()` finds (or creates) the connection of a TCP segment, keeps
its counters and state (SYN, FIN, RST, idle timeout, eviction), reassembles each
direction (`pcaptool.tcp.reassembly`) and hands the bytes to the connection's
`StreamAnalyzer`, chosen by the first `StreamFactory` that accepts the connection's
first payload (see `pcaptool.tcp.stream`). When a connection ends it returns its
connection record (`--flows`), built with the envelope of `pcaptool.record.envelope`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pcaptool.record.envelope import conn_record, endpoint, format_latency
from pcaptool.tcp.reassembly import ACK, FIN, MASK, RST, SYN, Conn, FlowTable, Limits
from pcaptool.tcp.stream import Segment, SegmentObserver, StreamFactory

OTHER = "other"  # conn.app of connections no factory accepted: bookkeeping only
_NONE: tuple = ()


class ConnectionTracker:
    """The connections of one translation, their reassembly and their analyzers."""

    def __init__(
        self,
        factories: Sequence[StreamFactory] = (),
        observers: Sequence[SegmentObserver] = (),
        flows: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.factories = tuple(factories)
        self.observers = tuple(observers)
        self.flows = flows
        self.table = FlowTable(limits)

    # -- entry points -----------------------------------------------------------------

    def segment(self, rec: dict, key, direction: int, seg: Segment, tag=None) -> list | tuple:
        """Track one segment; analyzers add keys to `rec`. Returns the connection records
        of connections that ended (evicted or expired ones first), usually empty."""
        out: list | tuple = _NONE
        ts = seg.ts
        table = self.table
        if ts >= table.next_tick and table.due(ts):
            out = self._closed_all(table.expired(ts), ts, "timeout", out)
        conn = table.last
        if conn is None or conn.key is not key:  # not the connection of the last segment
            conns = table.conns
            conn = conns.pop(key, None)
            if conn is not None:
                conns[key] = conn  # most recently active last
                table.last = conn
        flags = seg.flags
        if conn is not None and not (conn.closed and flags & SYN and not flags & ACK):
            conn.last_ts = ts
            conn.last_num = seg.num
        else:
            conn, out = self._conn(conn, key, direction, seg, out)
        i = 0 if direction == conn.orig else 1
        if conn.endpoints is None:
            conn.tag = tag
            a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
            conn.endpoints = (a, b) if i == 0 else (b, a)
        n = len(seg.payload)
        conn.packets[i] += 1
        if self.observers:
            for ob in self.observers:
                ob.segment(conn, i, seg, rec)
        app = conn.app
        if conn.closed:  # late ACKs of a finished connection still belong to its trace
            conn.bytes[i] += n
            _copy_trace(app, rec)
            return out
        if flags & 0x07 == 0 and app is not None and app is not OTHER:
            # the common case: no SYN/FIN/RST in a connection we parse
            conn.bytes[i] += n
            if conn.streams[1 - i].held:
                self._ack(conn, i, seg, rec)
            if n:
                hs = conn.streams[i]
                if hs.next_seq == seg.seq and not hs.held and not seg.missing and conn.app is app:
                    # in order, nothing held: HalfStream.segment's first case (and the
                    # analyzer still there after the peer's held data went to it)
                    hs.gap = 0
                    hs.next_seq = (seg.seq + n) & MASK
                    hs.delivered += n
                    app.data(conn, i, seg.payload, 0, ts, seg.num, rec)
                else:
                    self._data(conn, i, seg, rec)
            tr = app.trace()
            if tr:
                rec.update(tr)
            return out
        return self._control(conn, i, seg, rec, out)

    def tick(self, ts: int) -> list[dict]:
        """Expire idle connections as of `ts` without a packet (parallel workers)."""
        if self.table.due(ts):
            return list(self._closed_all(self.table.expired(ts), ts, "timeout", _NONE))
        return []

    def finish(self, ts: int | None = None) -> list[dict]:
        """End of input: every connection still open ends (oldest activity first)."""
        out: list[dict] = []
        for c in self.table.drain():
            self._close(c, ts if ts is not None else c.last_ts, out, "end")
        return out

    def abandon(self, key) -> None:
        """Stop analysing a connection (its analyzer failed): bookkeeping only from now."""
        conn = self.table.conns.get(key)
        if conn is not None:
            if _analysed(conn.app):
                conn.app.close()
            conn.app = OTHER
            conn.streams[0].drop()
            conn.streams[1].drop()

    # -- internals --------------------------------------------------------------------

    def _conn(self, conn, key, direction: int, seg: Segment, out):
        """A new connection (`conn` None, or a closed one whose ports a SYN reuses)."""
        if conn is not None:
            self.table.conns[key] = conn  # port reuse: let the table retire the closed one
        conn, evicted = self.table.get(key, direction, seg.flags, seg.ts, seg.num)
        if evicted:
            out = self._closed_all(evicted, seg.ts, "evicted", out)
        return conn, out

    def _closed_all(self, conns: list, ts: int, why: str, out):
        if conns:
            out = list(out)
            for c in conns:
                self._close(c, ts, out, why)
        return out

    def _control(self, conn: Conn, i: int, seg: Segment, rec: dict, out):
        """A segment with SYN, FIN or RST, or of a connection not (yet) analysed."""
        flags = seg.flags
        n = len(seg.payload)
        conn.bytes[i] += n
        hs = conn.streams[i]
        if flags & SYN:
            if flags & ACK:
                conn.synack = True
            else:
                conn.syn = True
            hs.syn(seg.seq)
        app = conn.app
        if app is OTHER or not self.factories:
            if n:
                hs.seen(seg.seq, n)
        else:
            self._ack(conn, i, seg, rec)
            if n:
                # a connection not sniffed yet is reassembled like the others: it is
                # sniffed on its first in-order bytes, even when they arrive late
                if conn.app is OTHER:
                    hs.seen(seg.seq, n)
                else:
                    self._data(conn, i, seg, rec)
            _copy_trace(conn.app, rec)
        if flags & FIN:
            conn.fins[i] = True
        if flags & RST and conn.rst < 0:
            conn.rst = i
        if conn.rst >= 0 or (conn.fins[0] and conn.fins[1]):
            out = list(out)
            self._close(conn, seg.ts, out, "closed", rec, seg.num)
            conn.closed = True
        elif flags & FIN and _analysed(conn.app):
            # a half-close ends that direction's stream: a body read to the close completes
            self._finish_dir(conn, i, seg.ts, rec, seg.num)
        return out

    def _sniff(self, conn: Conn, i: int, payload: bytes):
        for f in self.factories:
            app = f.sniff(conn, i, payload)
            if app is not None:
                conn.app = app
                return app
        conn.app = OTHER
        return OTHER

    def _ack(self, conn: Conn, i: int, seg: Segment, rec: dict) -> None:
        """The peer's held data past a hole this ACK covers will never fill: deliver it."""
        other = conn.streams[1 - i]
        if other.held and seg.flags & ACK:
            data = other.peer_ack(seg.ack)
            if data is not None or other.gap:
                self._deliver(conn, 1 - i, data, other.gap, seg.ts, seg.num, rec)

    def _data(self, conn: Conn, i: int, seg: Segment, rec: dict) -> None:
        hs = conn.streams[i]
        data = hs.segment(seg.seq, seg.payload)
        if data is not None or hs.gap:
            self._deliver(conn, i, data, hs.gap, seg.ts, seg.num, rec)
        if seg.missing:
            data = hs.cut_short(seg.seq + len(seg.payload), seg.missing)
            if hs.gap:
                self._deliver(conn, i, data, hs.gap, seg.ts, seg.num, rec)

    def _deliver(self, conn: Conn, i: int, data, gap: int, ts: int, num: int, rec: dict) -> None:
        app = conn.app
        if app is None:
            if not data:
                return
            app = self._sniff(conn, i, data)
            if app is OTHER:
                conn.streams[0].drop()
                conn.streams[1].drop()
                return
        elif app is OTHER:
            return
        if gap:
            tcp = rec.get("tcp")
            if not isinstance(tcp, dict):
                tcp = rec["tcp"] = {}
            tcp["gap"] = {"bytes": gap, "reason": conn.streams[i].gap_reason}
        app = conn.app
        if app is not OTHER:  # an analyzer may give up (conn.app = OTHER) while it is fed
            app.data(conn, i, data, gap, ts, num, rec)

    def _finish_dir(self, conn: Conn, i: int, ts: int, rec, num) -> None:
        hs = conn.streams[i]
        data = hs.flush()
        if data is not None or hs.gap:
            self._deliver(conn, i, data, hs.gap, ts, num, rec if rec is not None else {})
        if _analysed(conn.app):
            conn.app.half_close(conn, i, ts, num, rec)

    def _close(self, conn: Conn, ts: int, out: list, why: str, rec=None, num=0) -> None:
        if not conn.closed and conn.app is not OTHER and self.factories:
            try:
                for i in (0, 1):  # also sniffs a connection whose first bytes were held
                    self._finish_dir(conn, i, ts, rec, num)
            except Exception:  # an analyzer's bug: its connection record still comes
                if _analysed(conn.app):
                    conn.app.close()
                conn.app = OTHER
        conn.streams[0].drop()
        conn.streams[1].drop()
        if self.flows and not conn.closed:
            out.append(self._conn_record(conn, why))
        app = conn.app
        if app is None:
            conn.app = OTHER
        elif app is not OTHER:
            app.close()

    def _conn_record(self, conn: Conn, why: str) -> dict:
        (oip, oport), (rip, rport) = conn.endpoints or (("", 0), ("", 0))
        state = conn.state()
        dur = conn.last_ts - conn.first_ts
        c = {
            "proto": "tcp",
            "state": state,
            "end": why,
            "duration": dur,
            "first_num": conn.first_num,
            "last_num": conn.last_num,
            "orig": _side(conn, 0, oip, oport),
            "resp": _side(conn, 1, rip, rport),
        }
        if _analysed(conn.app):
            c.update(conn.app.summary())
        for ob in self.observers:
            c.update(ob.summary(conn))
        total = conn.packets[0] + conn.packets[1]
        message = (
            f"conn TCP {endpoint(oip, oport)} > {endpoint(rip, rport)} {state} "
            f"{format_latency(dur)} {total} pkts {conn.bytes[0]}/{conn.bytes[1]} bytes"
        )
        return conn_record(conn.last_ts, conn.tag, message, c)


def _side(conn: Conn, i: int, ip: str, port: int) -> dict:
    s = conn.streams[i]
    return {
        "ip": ip,
        "port": port,
        "packets": conn.packets[i],
        "bytes": conn.bytes[i],
        "retransmissions": s.retransmissions,
        "gaps": s.gaps,
    }


def _analysed(app) -> bool:
    return app is not None and app is not OTHER


def _copy_trace(app, rec: dict) -> None:
    if app is not None and app is not OTHER:
        tr = app.trace()
        if tr:
            rec.update(tr)
