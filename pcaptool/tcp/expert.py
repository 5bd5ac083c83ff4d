"""TCP expert analysis per segment, with Wireshark's meanings and names (`tcp.analysis.*`).

`TcpExpert.segment(...)` is fed plain per-segment values (time, endpoints, sequence and
acknowledgment numbers, flag bits, raw window, payload length, the window-scale and SACK
options) in capture order and returns the analysis of that segment, or None when Wireshark
would show none. The rules follow the sequence analysis of Wireshark 4.0
(`tcp_analyze_sequence_number` in epan/dissectors/packet-tcp.c, single pass, default
preferences): the same state per direction (pcaptool/tcp/expertstate.py), the same order of
the tests, the same 32-bit sequence arithmetic, and the same quirks, so that
`tshark -T fields -e tcp.analysis.…` is the oracle. docs/expert.md lists every rule and
every known disagreement.

Most segments of a healthy connection are in order, carry an ACK and no SYN/FIN/RST, and
no window is zero: `_steady_ack` and `_steady_data` handle those with only the tests that can hold for them (the
same results; `tests/test_expert_paths.py` checks them against the general path).

Memory is bounded: at most `max_segments` unacknowledged segments are remembered per
direction (Wireshark's TCP_MAX_UNACKED_SEGMENTS), at most `max_conns` connections, and at
most `budget` segments over all connections (the connections first seen longest ago are
forgotten first; a later packet of one starts afresh, as at the start of a capture).
"""

from __future__ import annotations

from pcaptool.tcp.expertflags import ACK, ANY_RETRANSMISSION, FIN, REUSED_PORTS, RST, SFR, SYN
from pcaptool.tcp.expertrules import NEG, WINDOW_FULL, acked, analyze, in_flight, sack_bytes
from pcaptool.tcp.expertstate import Conn, M, Side
from pcaptool.tcp.outcome import control, count

__all__ = ["Conn", "Side", "TcpExpert"]

SFR_ACK = SFR | ACK
WRAP = M + 1  # 2^32


class TcpExpert:
    """Per-input analysis state: conversations by directional 4-tuple.

    `shortcut=False` sends every segment the general way (tests compare the two)."""

    def __init__(
        self,
        max_conns: int = 100_000,
        max_segments: int = 10_000,
        budget: int = 2_000_000,
        shortcut: bool = True,
    ) -> None:
        self.max_conns = max_conns
        self.max_segments = max_segments
        self.budget = budget
        self.shortcut = shortcut
        self.segments = 0  # unacked segments remembered over all connections
        # directional 4-tuple -> (connection, side index, that side, the other side)
        self.conns: dict[tuple, tuple[Conn, int, Side, Side]] = {}

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
        if hit is not None and flags & SFR_ACK == ACK and wscale is None and self.shortcut:
            conn, _, fwd, rev = hit
            # in order (no loss, keep-alive or retransmission), no window is zero (no
            # zero-window probe), and not a repeated ACK (window update, duplicate ACK)
            if (
                seq == fwd.nextseq != 0
                and window
                and rev.window
                and rev.base_set
                and (seglen or ack != fwd.lastack)
            ):
                # nor an ACKed unseen segment, nor data acknowledged already (spurious);
                # the usual numbers are tested first, without 32-bit arithmetic
                top, peer_ack = rev.maxseqtobeacked, rev.lastack
                steady = ack == top or not top or (top - ack) & M < NEG
                if steady and seglen and peer_ack and peer_ack != seq:
                    past = (seq + seglen - peer_ack) & M
                    steady = past != 0 and past < NEG
                if steady and seglen:
                    return _steady_data(
                        self, conn, fwd, rev, num, ts, seq, ack, flags, seglen, window, sack
                    )
                if steady:
                    return _steady_ack(self, conn, fwd, rev, num, ts, seq, ack, window, sack)
        return self._general(hit, key, num, ts, seq, ack, flags, window, seglen, wscale, sack)

    def _general(
        self,
        hit: tuple[Conn, int, Side, Side] | None,
        key: tuple,
        num: int,
        ts: int,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        seglen: int,
        wscale: int | None,
        sack: list | None,
    ) -> dict | None:
        """Any segment: the connection (a new one on reused ports), then every test."""
        ta = 0
        made = False  # whether Wireshark creates its per-packet record before the analysis
        if hit is None:
            conn, i = self._new(key), 0
        else:
            conn, i, fwd, _ = hit
            syn = flags & (SYN | ACK)
            if syn == SYN and fwd.base_set and seq != fwd.base_seq:
                self._forget(key)  # a new connection on the same ports
                conn, i = self._new(key), 0
                ta = REUSED_PORTS
            elif syn == SYN and fwd.base_set:  # the ISN again: expect what follows it
                fwd.nextseq = fwd.maxseqtobeacked  # (Wireshark issue 17616)
                made = True
            elif syn == SYN | ACK and fwd.base_set and seq != fwd.base_seq:
                fwd.base_seq = seq
                ta = REUSED_PORTS
        fwd, rev = conn.sides[i], conn.sides[1 - i]
        out = analyze(self, conn, fwd, rev, num, ts, seq, ack, seglen, flags, window, ta, made)
        _handshake(conn, fwd, rev, ts, flags, wscale)
        fwd.sack = sack_bytes(sack) if sack else 0
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
        hit = self.conns.get((src, sport, dst, dport))
        return None if hit is None else hit[:2]

    # -- the connection table -------------------------------------------------------------

    def _new(self, key: tuple) -> Conn:
        conns = self.conns
        if len(conns) >= 2 * self.max_conns or self.segments > self.budget:
            self._shed()
        conn = Conn()
        a, b = conn.sides
        conns[key] = (conn, 0, a, b)
        conns[(key[2], key[3], key[0], key[1])] = (conn, 1, b, a)
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


def _steady_ack(
    ex: TcpExpert,
    conn: Conn,
    fwd: Side,
    rev: Side,
    num: int,
    ts: int,
    seq: int,
    ack: int,
    window: int,
    sack: list | None,
) -> dict | None:
    """`_general` for a steady ACK without data (`TcpExpert.segment`): its ACK number is
    new, no flag can hold, and nothing of the handshake or the outcome changes."""
    rev.valid_bif = True
    fwd.lastnondupack = num
    fwd.dupacknum = 0
    if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
        fwd.maxseqtobeacked = fwd.nextseq
    fwd.window = window
    fwd.lastack = ack
    fwd.lastack_ts = ts
    fwd.lastflags = 0
    fwd.first_ack = False
    fwd.sack = sack_bytes(sack) if sack else 0
    if fwd.zw_start:  # the zero window this side advertised is open again
        fwd.zw_time += ts - fwd.zw_start
        fwd.zw_start = 0
    conn.last_ts = ts
    if conn.mru_syn and not conn.first_rtt:  # the ACK that ends the handshake
        conn.first_rtt = ts - conn.mru_syn
    hit = acked(ex, conn, rev, ack) if rev.segs else None
    if hit is None:
        return None
    out = {"acks_frame": hit[2]}
    if ts != hit[3]:
        out["ack_rtt"] = ts - hit[3]
    if conn.first_rtt:
        out["initial_rtt"] = conn.first_rtt
    return out


def _steady_data(
    ex: TcpExpert,
    conn: Conn,
    fwd: Side,
    rev: Side,
    num: int,
    ts: int,
    seq: int,
    ack: int,
    flags: int,
    seglen: int,
    window: int,
    sack: list | None,
) -> dict | None:
    """`_general` for a steady segment with data (`TcpExpert.segment`): of the flags only
    window full can hold, and nothing of the handshake or the outcome changes."""
    rev.valid_bif = True
    ta = 0
    nextseq = seq + seglen
    if nextseq > M:
        nextseq -= WRAP
    if rev.win_scale != -1:
        shift = 0 if rev.first_ack or rev.win_scale == -2 else rev.win_scale
        edge = rev.lastack + (rev.window << shift)  # the peer's window's edge
        if nextseq == (edge & M if edge > M else edge):
            ta = WINDOW_FULL
    segs = fwd.segs
    if len(segs) < ex.max_segments:
        segs.append((seq, nextseq, num, ts))
        conn.nsegs += 1
        ex.segments += 1
    fwd.nextseq, fwd.nextseq_frame, fwd.nextseq_ts = nextseq, num, ts
    if ack != fwd.lastack:
        fwd.lastnondupack = num
        fwd.dupacknum = 0
    if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
        fwd.maxseqtobeacked = nextseq
    fwd.window = window
    fwd.lastack = ack
    fwd.lastack_ts = ts
    fwd.lastflags = ta
    fwd.first_ack = False
    fwd.sack = sack_bytes(sack) if sack else 0
    if fwd.zw_start:
        fwd.zw_time += ts - fwd.zw_start
        fwd.zw_start = 0
    fwd.bytes += seglen
    conn.data = True
    conn.last_ts = ts
    if conn.mru_syn and not conn.first_rtt:
        conn.first_rtt = ts - conn.mru_syn
    hit = acked(ex, conn, rev, ack) if rev.segs else None
    if hit is None and not (segs and fwd.valid_bif) and not ta:
        return None
    out: dict = {}
    if hit is not None:
        out["acks_frame"] = hit[2]
        if ts != hit[3]:
            out["ack_rtt"] = ts - hit[3]
    if segs and fwd.valid_bif:
        in_flight(fwd, rev, seglen, flags, out)
    if ta:
        out["flags"] = ta
    if conn.first_rtt:
        out["initial_rtt"] = conn.first_rtt
    return out


def _handshake(conn: Conn, fwd: Side, rev: Side, ts: int, flags: int, wscale: int | None) -> None:
    """After the sequence analysis, as the dissector does it: the initial RTT, the window
    scale (Wireshark's -1 unknown, -2 not used by this connection)."""
    if flags & SYN:
        if not flags & ACK:
            conn.mru_syn = ts
        fwd.first_ack = True
    elif flags & ACK:
        if conn.mru_syn and not conn.first_rtt:
            conn.first_rtt = ts - conn.mru_syn
        fwd.first_ack = False
    if wscale is not None:
        fwd.win_scale = min(wscale, 14)
    if flags & SYN:
        if fwd.win_scale == -1:
            fwd.win_scale = rev.win_scale = -2
        elif flags & ACK and rev.win_scale == -2:
            fwd.win_scale = -2
