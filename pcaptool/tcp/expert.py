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
no window is zero: the steady path (pcaptool/tcp/expertsteady.py) handles those with only
the tests that can hold for them (the same results; `tests/test_expert_paths.py` checks
them against the general path).

Memory is bounded: at most `max_segments` unacknowledged segments are remembered per
direction (Wireshark's TCP_MAX_UNACKED_SEGMENTS), at most `max_conns` connections, and at
most `budget` segments over all connections (the connections first seen longest ago are
forgotten first; a later packet of one starts afresh, as at the start of a capture).
"""

from __future__ import annotations

from pcaptool.tcp.expertflags import ACK, ANY_RETRANSMISSION, FIN, REUSED_PORTS, RST, SFR, SYN
from pcaptool.tcp.expertrules import NEG, analyze, sack_bytes
from pcaptool.tcp.expertstate import Conn, M, Side
from pcaptool.tcp.expertsteady import GENERAL, settle, steady, steady_data
from pcaptool.tcp.outcome import control, count

__all__ = ["Conn", "Side", "TcpExpert"]

SFR_ACK = SFR | ACK


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
        if hit is not None and flags & SFR_ACK == ACK and wscale is None:
            conn, _, fwd, rev = hit
            top = rev.maxseqtobeacked
            # the steady path (pcaptool/tcp/expertsteady.py) takes the segment when it is in
            # order (no loss, keep-alive or retransmission), no window is zero (no zero-window
            # probe), both sides are calm, and it ACKs no unseen segment
            if (
                seq == fwd.nextseq
                and seq
                and window
                and fwd.calm
                and rev.calm
                and (ack == top or not top or (top - ack) & M < NEG)
            ):
                out = (steady_data if seglen else steady)(
                    self, conn, fwd, rev, num, ts, seq, ack, flags, window, seglen, sack
                )
                if out is not GENERAL:
                    return out
        return self.general(hit, key, num, ts, seq, ack, flags, window, seglen, wscale, sack)

    def general(
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
        if self.shortcut:
            settle(conn, fwd, rev)
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
            a, b = hit[0].sides
            self.segments -= len(a.segs) + len(b.segs)

    def _shed(self) -> None:
        """Forget the oldest quarter of the connections (by first packet)."""
        conns = self.conns
        for key in list(conns)[: max(len(conns) // 4, 2)]:
            if key in conns:
                self._forget(key)


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
