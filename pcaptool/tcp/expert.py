"""TCP expert analysis per segment, with Wireshark's meanings and names (`tcp.analysis.*`).

`TcpExpert.segment(...)` is fed plain per-segment values (time, endpoints, sequence and
acknowledgment numbers, flag bits, raw window, payload length, the window-scale and SACK
options) in capture order and returns the analysis of that segment, or None when Wireshark
would show none. The rules follow the sequence analysis of Wireshark 4.0
(`tcp_analyze_sequence_number` in epan/dissectors/packet-tcp.c, single pass, default
preferences): the same state per direction, the same order of the tests, the same 32-bit
sequence arithmetic, and the same quirks, so that `tshark -T fields -e tcp.analysis.…`
is the oracle. docs/expert.md lists every rule and every known disagreement.

Memory is bounded: at most `max_segments` unacknowledged segments are remembered per
direction (Wireshark's TCP_MAX_UNACKED_SEGMENTS), at most `max_conns` connections, and at
most `budget` segments over all connections (the connections first seen longest ago are
forgotten first; a later packet of one starts afresh, as at the start of a capture).
"""

from __future__ import annotations

from pcaptool.tcp.expertflags import (  # the flag bits live there, once
    ACK,
    ACK_LOST_PACKET,
    ANY_RETRANSMISSION,
    DUPLICATE_ACK,
    FAST_RETRANSMISSION,
    FIN,
    KEEP_ALIVE,
    KEEP_ALIVE_ACK,
    LOST_PACKET,
    OUT_OF_ORDER,
    PSH,
    RETRANSMISSION,
    REUSED_PORTS,
    RST,
    SFR,
    SPURIOUS_RETRANSMISSION,
    SYN,
    WINDOW_FULL,
    WINDOW_UPDATE,
    ZERO_WINDOW,
    ZERO_WINDOW_PROBE,
    ZERO_WINDOW_PROBE_ACK,
)
from pcaptool.tcp.outcome import control, count

M = 0xFFFFFFFF
NEG = 0x80000000  # (x - y) & M >= NEG  <=>  (int32)(x - y) < 0
FAST_RT_NS = 20_000_000  # a retransmission within 20 ms of the 2nd duplicate ACK is fast
OOO_NS = 3_000_000  # out-of-order window while the initial RTT is unknown


class Side:
    """The analysis state of one direction (Wireshark's tcp_flow_t and its seq info)."""

    __slots__ = (
        "base_set",
        "base_seq",
        "nextseq",
        "nextseq_frame",
        "nextseq_ts",
        "maxseqtobeacked",
        "lastack",
        "lastack_ts",
        "lastnondupack",
        "dupacknum",
        "window",
        "win_scale",
        "first_ack",
        "valid_bif",
        "lastflags",
        "segs",
        "sack",
        "push_bytes",
        "push_last",
        # for the connection record (pcaptool/tcp/outcome.py)
        "bytes",
        "rt_segs",
        "rt_bytes",
        "dupacks",
        "zw_start",
        "zw_time",
    )

    def __init__(self) -> None:
        self.base_set = False
        self.base_seq = 0
        self.nextseq = 0  # 0: not known yet (as in Wireshark)
        self.nextseq_frame = 0
        self.nextseq_ts = 0
        self.maxseqtobeacked = 0
        self.lastack = 0
        self.lastack_ts = 0
        self.lastnondupack = 0
        self.dupacknum = 0
        self.window = M  # G_MAXUINT32 until this side sends, as in Wireshark
        self.win_scale = -1  # -1 unknown, -2 not used, else the shift
        self.first_ack = False
        self.valid_bif = True
        self.lastflags = 0
        self.segs: list[list[int]] = []  # unacked [seq, nextseq, frame, ts], oldest first
        self.sack = 0  # bytes in the SACK blocks of this direction's last segment
        self.push_bytes = 0
        self.push_last = False
        self.bytes = 0
        self.rt_segs = 0
        self.rt_bytes = 0
        self.dupacks = 0
        self.zw_start = 0  # when this side advertised a zero window (0: it does not)
        self.zw_time = 0


class Conn:
    """Both directions of one TCP conversation."""

    __slots__ = (
        "sides",
        "mru_syn",
        "first_rtt",
        "nsegs",
        "data",
        "fins",
        "syns",
        "syn_first",
        "syn_last",
        "syn_side",
        "synack",
        "rst_side",
        "rst_bytes",
        "fin_side",
        "last_ts",
        "icmp",
    )

    def __init__(self) -> None:
        self.sides = (Side(), Side())
        self.mru_syn = 0
        self.first_rtt = 0
        self.nsegs = 0
        self.data = False  # payload seen in either direction
        self.fins = 0  # bit 1 << side: that side sent a FIN
        self.syns = 0  # SYNs without ACK sent (1 + retries)
        self.syn_first = self.syn_last = 0
        self.syn_side = -1  # the side that sent the SYN (the originator)
        self.synack = False
        self.rst_side = -1  # the side whose RST came first
        self.rst_bytes = 0  # payload bytes both ways before it
        self.fin_side = -1  # the side whose FIN came first
        self.last_ts = 0
        self.icmp: list[dict] = []  # ICMP errors quoting this connection (at most 8)


class TcpExpert:
    """Per-input analysis state: conversations by directional 4-tuple."""

    def __init__(
        self, max_conns: int = 100_000, max_segments: int = 10_000, budget: int = 2_000_000
    ) -> None:
        self.max_conns = max_conns
        self.max_segments = max_segments
        self.budget = budget
        self.segments = 0  # unacked segments remembered over all connections
        self.conns: dict[tuple, tuple[Conn, int]] = {}

    def segment(
        self,
        num: int,
        ts: int,
        src,
        sport: int,
        dst,
        dport: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        seglen: int,
        wscale: int | None = None,
        sack: list | None = None,
    ) -> dict | None:
        """The analysis of packet `num` (tshark's tcp.analysis fields), or None."""
        key = (src, sport, dst, dport)
        hit = self.conns.get(key)
        ta = 0
        if hit is None:
            conn, i = self._new(key), 0
        else:
            conn, i = hit
            fwd = conn.sides[i]
            if flags & (SYN | ACK) == SYN and fwd.base_set and seq != fwd.base_seq:
                self._forget(key)  # a new connection on the same ports
                conn, i = self._new(key), 0
                ta = REUSED_PORTS
            elif flags & (SYN | ACK) == SYN | ACK and fwd.base_set and seq != fwd.base_seq:
                fwd.base_seq = seq
                ta = REUSED_PORTS
        fwd, rev = conn.sides[i], conn.sides[1 - i]
        out = _analyze(self, conn, fwd, rev, num, ts, seq, ack, seglen, flags, window, ta)
        # after the sequence analysis, as the dissector does it: handshake, options
        if flags & SYN:
            if not flags & ACK:
                conn.mru_syn = ts
            fwd.first_ack = True
        elif flags & ACK:
            if conn.mru_syn and not conn.first_rtt:
                conn.first_rtt = ts - conn.mru_syn or 0
            fwd.first_ack = False
        if wscale is not None:
            fwd.win_scale = min(wscale, 14)
        if flags & SYN:
            if fwd.win_scale == -1:
                fwd.win_scale = rev.win_scale = -2
            elif flags & ACK and rev.win_scale == -2:
                fwd.win_scale = -2
        fwd.sack = _sack_bytes(sack) if sack else 0
        if out is not None and conn.first_rtt:
            out["initial_rtt"] = conn.first_rtt
        conn.last_ts = ts
        if seglen and not flags & (SYN | RST):
            conn.data = True
        if out is not None and "flags" in out:
            count(fwd, out["flags"], seglen)
        if window == 0 and not flags & SFR:
            if not fwd.zw_start:
                fwd.zw_start = ts
        elif fwd.zw_start and window:
            fwd.zw_time += ts - fwd.zw_start
            fwd.zw_start = 0
        if flags & (SYN | FIN | RST):
            out = control(conn, i, ts, flags, out)
        elif out is None or not out.get("flags", 0) & ANY_RETRANSMISSION:
            fwd.bytes += seglen
        return out

    def find(self, src, sport: int, dst, dport: int) -> tuple[Conn, int] | None:
        """The connection and the side index of (src, sport) -> (dst, dport), if known."""
        return self.conns.get((src, sport, dst, dport))

    # -- the connection table -------------------------------------------------------------

    def _new(self, key: tuple) -> Conn:
        conns = self.conns
        if len(conns) >= 2 * self.max_conns or self.segments > self.budget:
            self._shed()
        conn = Conn()
        conns[key] = (conn, 0)
        conns[(key[2], key[3], key[0], key[1])] = (conn, 1)
        return conn

    def _forget(self, key: tuple) -> None:
        conns = self.conns
        hit = conns.pop(key, None)
        conns.pop((key[2], key[3], key[0], key[1]), None)
        if hit is not None:
            self.segments -= hit[0].nsegs

    def _shed(self) -> None:
        """Forget the oldest quarter of the connections (by first packet)."""
        conns = self.conns
        for key in list(conns)[: max(len(conns) // 4, 2)]:
            if key in conns:
                self._forget(key)


def _sack_bytes(sack: list) -> int:
    """Bytes in the SACK blocks Wireshark keeps for bytes in flight: the first three."""
    total = 0
    for left, right in sack[:3]:
        total += (right - left) & M
    return total


def _analyze(
    ex: TcpExpert,
    conn: Conn,
    fwd: Side,
    rev: Side,
    num: int,
    ts: int,
    seq: int,
    ack: int,
    seglen: int,
    flags: int,
    window: int,
    ta: int,
) -> dict | None:
    """Wireshark's tcp_analyze_sequence_number for one segment; the flag bits and values."""
    made = ta != 0  # whether Wireshark would have created its per-packet record
    if not fwd.base_set:
        fwd.base_seq = seq if flags & SYN else (seq - 1) & M
        fwd.base_set = True
    if not rev.base_set and flags & ACK:
        rev.base_seq = (ack - 1) & M
        rev.base_set = True
    if flags & ACK:
        rev.valid_bif = True
    nextseq0 = fwd.nextseq
    ta = _fwd_flags(fwd, rev, seq, ack, seglen, flags, window, ta)
    if ta:
        made = True
    if ack != fwd.lastack:
        fwd.lastnondupack = num
        fwd.dupacknum = 0
    out: dict = {}
    # ACKed unseen segment: beyond the highest contiguous sequence seen the other way
    if rev.maxseqtobeacked and (rev.maxseqtobeacked - ack) & M >= NEG and flags & ACK:
        made = True
        if rev.maxseqtobeacked < rev.nextseq:  # a plain comparison, as in Wireshark 4.0
            rev.maxseqtobeacked = rev.nextseq  # so this is said once
            ta |= ACK_LOST_PACKET
        else:  # the other side only sends ACKs: once until its ACK number changes
            if rev.dupacknum == 0:
                ta |= ACK_LOST_PACKET
            rev.dupacknum = -1
    if seglen > 0 or flags & (SYN | FIN):
        rt = _retransmission(conn, fwd, rev, ts, seq, seglen, flags, ta, nextseq0)
        if rt:
            ta |= rt
            made = True
            if rt == RETRANSMISSION:
                ref_ts, ref_frame = fwd.nextseq_ts, fwd.nextseq_frame
                if fwd.segs:
                    ref_frame, ref_ts = fwd.segs[0][2], fwd.segs[0][3]
                if ts != ref_ts:
                    out["rto"] = ts - ref_ts
                    out["rto_frame"] = ref_frame
    nextseq = (seq + seglen) & M
    if seglen or flags & (SYN | FIN):
        if flags & (SYN | FIN):
            nextseq = (nextseq + 1) & M
        if len(fwd.segs) < ex.max_segments:
            fwd.segs.append([seq, nextseq, num, ts])
            conn.nsegs += 1
            ex.segments += 1
    if not ta & ZERO_WINDOW_PROBE:
        if not fwd.nextseq or (fwd.nextseq - nextseq) & M >= NEG:
            fwd.nextseq, fwd.nextseq_frame, fwd.nextseq_ts = nextseq, num, ts
        if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
            fwd.maxseqtobeacked = fwd.nextseq
    fwd.window = window
    fwd.lastack = ack
    fwd.lastack_ts = ts
    if ta & DUPLICATE_ACK:
        out["duplicate_ack_num"] = fwd.dupacknum
        out["duplicate_ack_frame"] = fwd.lastnondupack
    fwd.lastflags = ta
    if rev.segs and _acked(ex, conn, rev, ack, ts, out):
        made = True
    if seglen and fwd.segs and fwd.valid_bif and _in_flight(fwd, rev, seglen, flags, out):
        made = True
    if not made:
        return None
    if ta:
        out["flags"] = ta
    return out


def _fwd_flags(
    fwd: Side, rev: Side, seq: int, ack: int, seglen: int, flags: int, window: int, ta: int
) -> int:
    """The tests on this direction's own state, up to Wireshark's `finished_fwd`."""
    nextseq = fwd.nextseq
    if seglen == 1 and seq == nextseq and rev.window == 0:
        return ta | ZERO_WINDOW_PROBE
    plain = not flags & SFR
    if window == 0 and plain:
        ta |= ZERO_WINDOW
    if nextseq and (nextseq - seq) & M >= NEG and not flags & RST:
        ta |= LOST_PACKET
        fwd.valid_bif = False
    if seglen <= 1 and seq == (nextseq - 1) & M and plain:
        ta |= KEEP_ALIVE
    if not plain:  # the tests below are never true for SYN, FIN or RST segments
        return ta
    same = seglen == 0 and seq == nextseq and ack == fwd.lastack
    if same and window and window != fwd.window:
        ta |= WINDOW_UPDATE
    if seglen > 0 and rev.win_scale != -1:
        shift = 0 if rev.first_ack or rev.win_scale == -2 else rev.win_scale
        if (seq + seglen) & M == (rev.lastack + (rev.window << shift)) & M:
            ta |= WINDOW_FULL
    if same and window and window == fwd.window and rev.lastflags & KEEP_ALIVE:
        return ta | KEEP_ALIVE_ACK
    if same and window == 0 and fwd.window == 0 and rev.lastflags & ZERO_WINDOW_PROBE:
        return ta | ZERO_WINDOW_PROBE_ACK
    if same and window and window == fwd.window:
        fwd.dupacknum += 1
        ta |= DUPLICATE_ACK
    return ta


def _retransmission(
    conn: Conn,
    fwd: Side,
    rev: Side,
    ts: int,
    seq: int,
    seglen: int,
    flags: int,
    ta: int,
    nextseq: int,
) -> int:
    """Retransmission, fast or spurious retransmission, or out-of-order: the bit, or 0."""
    if ta & KEEP_ALIVE:
        return 0
    behind = nextseq != 0 and (seq - nextseq) & M >= NEG
    if seglen > 1 and (nextseq - 1) & M == seq:
        behind = False
    if seglen > 0 and rev.lastack:
        end = (seq + seglen) & M
        if end == rev.lastack or (end - rev.lastack) & M >= NEG:
            return SPURIOUS_RETRANSMISSION
    t = ts - rev.lastack_ts
    if behind and rev.dupacknum >= 2 and rev.lastack == seq and 0 <= t < FAST_RT_NS:
        return FAST_RETRANSMISSION
    t = ts - fwd.nextseq_ts
    thres = conn.first_rtt or OOO_NS
    end = (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & M
    if behind and 0 <= t < thres and nextseq != end:
        return OUT_OF_ORDER
    return RETRANSMISSION if behind else 0


def _acked(ex: TcpExpert, conn: Conn, rev: Side, ack: int, ts: int, out: dict) -> bool:
    """Drop the other direction's segments this ACK covers; note the one it ACKs exactly."""
    segs = rev.segs
    if len(segs) == 1:  # the common case, without the list walk
        s = segs[0]
        if ack == s[1]:
            out["acks_frame"] = s[2]
            if ts != s[3]:
                out["ack_rtt"] = ts - s[3]
        elif (ack - s[1]) & M >= NEG:  # before the segment's end: kept
            if (s[0] - ack) & M >= NEG:
                s[0] = ack  # partly acknowledged: keep the rest
            return False
        rev.segs = []
        conn.nsegs -= 1
        ex.segments -= 1
        return ack == s[1]
    hit = False
    keep = []
    for s in reversed(segs):  # Wireshark walks its list newest first
        if ack == s[1]:
            hit = True
            out["acks_frame"] = s[2]
            rtt = ts - s[3]
            if rtt:
                out["ack_rtt"] = rtt
            else:
                out.pop("ack_rtt", None)
        elif (ack - s[0]) & M and (s[0] - ack) & M >= NEG and (s[1] - ack) & M < NEG:
            s[0] = ack  # partly acknowledged: keep the rest
            keep.append(s)
            continue
        elif (ack - s[1]) & M >= NEG:  # after this ACK: keep
            keep.append(s)
            continue
    dropped = len(segs) - len(keep)
    if dropped:
        keep.reverse()
        rev.segs = keep
        conn.nsegs -= dropped
        ex.segments -= dropped
    return hit


def _in_flight(fwd: Side, rev: Side, seglen: int, flags: int, out: dict) -> bool:
    """Bytes in flight after this segment (Wireshark's payload-based method)."""
    base = fwd.base_seq
    segs = fwd.segs
    s = segs[0]
    first, last = (s[0] - base) & M, (s[1] - base) & M
    for s in segs:
        lo, hi = (s[0] - base) & M, (s[1] - base) & M
        if lo < first:
            first = lo
        if hi > last:
            last = hi
    in_flight = (last - first - rev.sack) & M
    if 0 < in_flight < 2_000_000_000:
        if flags & (SYN | FIN):
            in_flight -= 1
        out["bytes_in_flight"] = in_flight
        shown = True
    else:
        shown = False  # tshark shows the PSH count only with bytes in flight
    if flags & PSH:
        fwd.push_bytes = seglen if fwd.push_last else fwd.push_bytes + seglen
        fwd.push_last = True
    elif fwd.push_last:
        fwd.push_bytes = seglen
        fwd.push_last = False
    else:
        fwd.push_bytes += seglen
    if shown:
        out["push_bytes_sent"] = fwd.push_bytes
    return True
