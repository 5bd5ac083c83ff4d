"""Per-flow, per-direction TCP stream reassembly with bounded memory.

`HalfStream` turns the segments of one direction of a TCP connection into the byte stream
the receiving application saw: in-order data is delivered as is (no copy), retransmissions
and overlaps are dropped (RFC 9293 section 3.10.7.4 keeps the first copy; so do we), segments
that arrive early are held until the hole before them fills, and a hole that cannot fill
(the capture lost the segment, the peer already ACKed past it, or a memory cap was hit) is
skipped and reported as a gap so the parser above can resynchronise.

`FlowTable` keeps the connections: least recently active first, evicted after FIN/RST (a
short tombstone absorbs the last ACKs), after an idle timeout, or when the table is full.
Sequence numbers are compared modulo 2**32 (RFC 1982 serial arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass

MASK = 0xFFFFFFFF
HALF = 0x80000000

# TCP flag bits (RFC 9293 section 3.1)
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10


@dataclass(frozen=True)
class Limits:
    """Memory and time bounds of reassembly; every one of them is reported when hit."""

    flow_bytes: int = 1 << 20  # out-of-order bytes held per direction of a connection
    total_bytes: int = 64 << 20  # out-of-order bytes held across all connections
    max_segments: int = 256  # out-of-order segments held per direction
    total_segments: int = 65_536  # out-of-order segments held across all connections
    max_flows: int = 40_000  # connections tracked at once (~4 KB each with HTTP state)
    idle_timeout_ns: int = 300 * 1_000_000_000  # Zeek's tcp_inactivity_timeout
    linger_ns: int = 2 * 1_000_000_000  # closed connections absorb late ACKs this long


class Budget:
    """Out-of-order bytes held across all streams of one table (the total cap)."""

    __slots__ = ("held", "segments", "limits", "cap_hits")

    def __init__(self, limits: Limits) -> None:
        self.held = 0
        self.segments = 0  # each held segment costs ~100 bytes of bookkeeping beside its data
        self.limits = limits
        self.cap_hits = 0


class HalfStream:
    """One direction of a TCP connection.

    `segment()` returns the bytes that became deliverable (or None); when bytes were
    skipped first, `gap` holds how many (and `gap_reason` why) until the next call.
    """

    __slots__ = (
        "next_seq",
        "held",
        "held_bytes",
        "budget",
        "gap",
        "gap_reason",
        "gaps",
        "gap_bytes",
        "retransmissions",
        "delivered",
        "fin",
    )

    def __init__(self, budget: Budget) -> None:
        self.next_seq: int | None = None
        self.held: dict[int, bytes] = {}
        self.held_bytes = 0
        self.budget = budget
        self.gap = 0
        self.gap_reason = ""
        self.gaps = 0
        self.gap_bytes = 0
        self.retransmissions = 0
        self.delivered = 0
        self.fin = False

    def syn(self, seq: int) -> None:
        """A SYN fixes the initial sequence number: data starts at seq + 1."""
        if self.next_seq is None:
            self.next_seq = (seq + 1) & MASK

    def segment(self, seq: int, payload: bytes) -> bytes | None:
        """Add one segment's payload (non-empty); return what is now deliverable in order."""
        self.gap = 0
        nxt = self.next_seq
        n = len(payload)
        if nxt is None:  # capture started mid-connection: the first data we see starts it
            nxt = self.next_seq = seq
        diff = (seq - nxt) & MASK
        if diff == 0:
            self.next_seq = (seq + n) & MASK
            self.delivered += n
            if self.held:
                return self._drain(payload)
            return payload
        if diff >= HALF:  # starts before next_seq: retransmission or overlap
            behind = (nxt - seq) & MASK
            if behind >= n:
                self.retransmissions += 1
                return None
            payload = payload[behind:]
            n -= behind
            self.next_seq = (nxt + n) & MASK
            self.delivered += n
            if self.held:
                return self._drain(payload)
            return payload
        # Arrived early: hold it until the hole before it fills (or a bound is hit).
        old = self.held.get(seq)
        if old is not None:
            if len(old) >= n:
                self.retransmissions += 1
                return None
            self._release(len(old))
        else:
            self.budget.segments += 1
        self.held[seq] = payload
        self.held_bytes += n
        self.budget.held += n
        lim = self.budget.limits
        if (
            self.held_bytes > lim.flow_bytes
            or len(self.held) > lim.max_segments
            or self.budget.held > lim.total_bytes
            or self.budget.segments > lim.total_segments
        ):
            self.budget.cap_hits += 1
            return self.skip_hole("memcap")
        return None

    def skip_hole(self, reason: str) -> bytes | None:
        """Give up on the hole at next_seq: jump to the first held segment, report the gap."""
        if not self.held or self.next_seq is None:
            return None
        nxt = self.next_seq
        first = min(self.held, key=lambda s: (s - nxt) & MASK)
        skipped = (first - nxt) & MASK
        self.next_seq = first
        self.gaps += 1
        self.gap_bytes += skipped
        out = self._drain(b"")
        self.gap = skipped
        self.gap_reason = reason
        return out

    def seen(self, seq: int, n: int) -> None:
        """Bookkeeping only (streams nobody parses): count retransmissions, keep no data."""
        nxt = self.next_seq
        if nxt is None:
            self.next_seq = (seq + n) & MASK
            return
        diff = (seq - nxt) & MASK
        if diff >= HALF and ((nxt - seq) & MASK) >= n:
            self.retransmissions += 1
            return
        end = (seq + n) & MASK
        if ((end - nxt) & MASK) < HALF:
            self.next_seq = end

    def cut_short(self, end_seq: int, missing: int) -> bytes | None:
        """The segment that ended at `end_seq` lost `missing` bytes to the capture's
        snaplen. If the stream stands right there, skip them (reported in `gap`) and
        return what became deliverable behind them."""
        self.gap = 0
        if missing <= 0 or self.next_seq != end_seq & MASK:
            return None
        self.next_seq = (end_seq + missing) & MASK
        self.gaps += 1
        self.gap_bytes += missing
        out = self._drain(b"") if self.held else None
        self.gap = missing
        self.gap_reason = "snaplen"
        return out

    def peer_ack(self, ack: int) -> bytes | None:
        """The peer acknowledged `ack`: if that is past a hole we hold data behind, the
        peer got bytes the capture lost, so the hole will never fill."""
        nxt = self.next_seq
        if not self.held or nxt is None:
            return None
        d = (ack - nxt) & MASK
        if d == 0 or d >= HALF:
            return None
        return self.skip_hole("lost")

    def flush(self) -> bytes | None:
        """End of stream: deliver whatever is held, skipping holes (each reported in gap)."""
        if not self.held:
            return None
        total_gap = 0
        parts = []
        while self.held:
            out = self.skip_hole("lost")
            total_gap += self.gap
            if out:
                parts.append(out)
        self.gap = total_gap
        return b"".join(parts) if parts else None

    def drop(self) -> None:
        """Forget held data (connection evicted)."""
        if self.held:
            self._release(self.held_bytes)
            self.budget.segments -= len(self.held)
            self.held.clear()
            self.held_bytes = 0

    def _release(self, n: int) -> None:
        self.held_bytes -= n
        self.budget.held -= n

    def _hold_rest(self, seq: int, rest: bytes) -> None:
        """Hold the part of a trimmed segment past delivered data (the longer copy wins)."""
        cur = self.held.get(seq)
        if cur is not None:
            if len(cur) >= len(rest):
                return
            self._release(len(cur))
        else:
            self.budget.segments += 1
        self.held[seq] = rest
        self.held_bytes += len(rest)
        self.budget.held += len(rest)

    def _drain(self, first: bytes) -> bytes:
        """Append held segments that are now contiguous with next_seq."""
        parts = [first] if first else []
        held = self.held
        while held:
            nxt = self.next_seq
            seg = held.pop(nxt, None)
            if seg is not None:
                self.budget.segments -= 1
            else:
                # trim held segments that now start inside delivered data
                moved = False
                for s in list(held):
                    behind = (nxt - s) & MASK
                    if 0 < behind < HALF:
                        data = held.pop(s)
                        self._release(len(data))
                        self.budget.segments -= 1
                        if behind < len(data):
                            self._hold_rest(nxt, data[behind:])
                            moved = True
                        else:
                            self.retransmissions += 1
                if not moved:
                    break
                continue
            n = len(seg)
            self._release(n)
            parts.append(seg)
            self.next_seq = (nxt + n) & MASK
            self.delivered += n
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)


class Conn:
    """One TCP connection: both half-streams, counters for the connection record, and
    `app`, the state an application analyzer keeps for it."""

    __slots__ = (
        "key",
        "orig",
        "streams",
        "first_ts",
        "last_ts",
        "first_num",
        "last_num",
        "packets",
        "bytes",
        "syn",
        "synack",
        "fins",
        "rst",
        "closed",
        "app",
        "endpoints",
        "tag",
    )

    def __init__(self, key, orig: int, budget: Budget, ts_ns: int, num: int) -> None:
        self.key = key
        self.orig = orig  # the caller's direction value of the originator (0 or 1)
        self.streams = (HalfStream(budget), HalfStream(budget))  # indexed by direction
        self.first_ts = ts_ns
        self.last_ts = ts_ns
        self.first_num = num
        self.last_num = num
        self.packets = [0, 0]
        self.bytes = [0, 0]
        self.syn = False
        self.synack = False
        self.fins = [False, False]
        self.rst = -1  # direction that sent the first RST, -1 if none
        self.closed = False
        self.app = None
        self.endpoints = None  # ((orig ip, port), (resp ip, port)), set by the analyzer
        self.tag = None  # whatever the caller wants to find again (translate's Flow)

    def state(self) -> str:
        """Zeek-style connection state (conn.log `conn_state`)."""
        o = self.orig
        r = 1 - o
        if self.rst >= 0:
            if not self.synack and self.syn and self.rst == r:
                return "REJ"
            return "RSTO" if self.rst == o else "RSTR"
        if not self.syn and not self.synack:
            return "OTH"
        if self.syn and not self.synack:
            return "SH" if self.fins[o] else "S0"
        if self.fins[o] and self.fins[r]:
            return "SF"
        if self.fins[o]:
            return "S2"
        if self.fins[r]:
            return "S3"
        return "S1"


class FlowTable:
    """Connections by flow key, least recently active first."""

    __slots__ = ("limits", "budget", "conns", "evicted_full", "_tick", "next_tick", "last")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.budget = Budget(self.limits)
        self.conns: dict = {}
        self.evicted_full = 0
        self._tick = -1
        self.next_tick = 0  # the capture time (ns) from which `due` can be true again
        self.last: Conn | None = None  # the connection last in `conns` (most recently active)

    def get(self, key, direction: int, flags: int, ts_ns: int, num: int) -> tuple[Conn, list]:
        """The connection of a packet (created when new); also the connections that had to
        be evicted to make room (the caller closes them)."""
        conns = self.conns
        conn = conns.pop(key, None)
        evicted: list = []
        if conn is not None and conn.closed and flags & SYN and not flags & ACK:
            evicted.append(conn)  # port reuse: a new connection replaces the closed one
            conn = None
        if conn is None:
            orig = direction
            if flags & SYN and flags & ACK:
                orig = 1 - direction  # first packet seen is the SYN-ACK
            conn = Conn(key, orig, self.budget, ts_ns, num)
            if len(conns) >= self.limits.max_flows:
                old = next(iter(conns))
                evicted.append(conns.pop(old))
                self.evicted_full += 1
        conns[key] = conn  # (re)insert at the end: most recently active
        self.last = conn
        conn.last_ts = ts_ns
        conn.last_num = num
        return conn, evicted

    def expired(self, ts_ns: int) -> list[Conn]:
        """Connections idle past the timeout (or closed past the linger), oldest first."""
        out = []
        conns = self.conns
        idle = ts_ns - self.limits.idle_timeout_ns
        linger = ts_ns - self.limits.linger_ns
        for _key, conn in conns.items():
            if conn.last_ts < idle or conn.closed and conn.last_ts < linger:
                out.append(conn)
            elif not conn.closed:
                break  # idle order: nothing later can be idle past the timeout
        for conn in out:
            del conns[conn.key]
            if conn is self.last:
                self.last = None
        return out

    def due(self, ts_ns: int) -> bool:
        """True once per second of capture time: when to call `expired`."""
        t = ts_ns // 1_000_000_000
        if t > self._tick:
            first = self._tick < 0
            self._tick = t
            self.next_tick = (t + 1) * 1_000_000_000
            return not first
        return False

    def drain(self) -> list[Conn]:
        """End of input: every connection still open, least recently active first."""
        out = list(self.conns.values())
        self.conns.clear()
        self.last = None
        return out
