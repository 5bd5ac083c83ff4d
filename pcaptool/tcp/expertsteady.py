"""The steady path of the TCP expert analysis (pcaptool/tcp/expert.py).

Most segments of a healthy connection are in order, carry an ACK and no SYN/FIN/RST, no
window is zero, and both directions are past their handshake, any zero window and any
loss (`Side.calm`, kept by the general path); `TcpExpert.segment` tests that. For those
only a few tests can hold (window full, the ACKed segment, bytes in flight), so `steady`
(an ACK without data) and `steady_data` run only those, with the same results as the
general path (`tests/test_expert_paths.py` compares the two), and return `GENERAL` for
any other segment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcaptool.tcp.expertflags import PSH, WINDOW_FULL
from pcaptool.tcp.expertrules import NEG, acked, sack_bytes, span
from pcaptool.tcp.expertstate import M, Side

if TYPE_CHECKING:
    from pcaptool.tcp.expert import TcpExpert
    from pcaptool.tcp.expertstate import Conn

GENERAL = object()  # `steady`'s answer for a segment the general path must analyse
WRAP = M + 1  # 2^32
BIF_MAX = 2_000_000_000  # tshark shows no bytes in flight of this many or more


def settle(conn: Conn, fwd: Side, rev: Side) -> None:
    """After the general path: whether each side is calm (`Side.calm`): its window not
    zero, no zero window open and no loss since its peer's last ACK; and the scale of its
    window."""
    for side in (fwd, rev):
        side.calm = bool(side.base_set and side.window and not side.zw_start and side.valid_bif)
        side.shift = _shift(side)


def _shift(side: Side) -> int:
    """The shift of the side's window for the window-full test, -1 for no test (the
    window scale unknown); no scaling until the ACK after its SYN."""
    ws = side.win_scale
    if ws == -1:
        return -1
    return 0 if ws == -2 or side.first_ack else ws


def steady(
    ex: TcpExpert,
    conn: Conn,
    fwd: Side,
    rev: Side,
    num: int,
    ts: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    seglen: int,
    sack: list | None,
) -> dict | None | object:
    """The analysis of an ACK segment without data, SYN/FIN/RST or a window scale option
    that passed `TcpExpert.segment`'s test for the steady path, or GENERAL."""
    if ack == fwd.lastack:
        return GENERAL  # a repeated ACK: window update, duplicate ACK, keep-alive ACK
    fwd.lastack = ack
    fwd.lastnondupack = num
    fwd.dupacknum = 0
    top = fwd.maxseqtobeacked
    if seq == top or not top:
        fwd.maxseqtobeacked = seq
    fwd.window = window
    fwd.lastack_ts = ts
    fwd.lastflags = 0
    if fwd.first_ack or sack or fwd.sack or not conn.first_rtt and conn.mru_syn:
        _seldom(conn, fwd, ts, sack)
    conn.last_ts = ts
    segs = rev.segs
    if not segs:
        return None
    if len(segs) == 1 and ack == segs[0][1]:  # the common case: the one segment, exactly
        s = segs.pop()
        ex.segments -= 1
    else:
        s = acked(ex, rev, ack)
        if s is None:
            return None
    out = {"acks_frame": s[2], "ack_rtt": ts - s[3]} if ts != s[3] else {"acks_frame": s[2]}
    if conn.first_rtt:
        out["initial_rtt"] = conn.first_rtt
    return out


def steady_data(
    ex: TcpExpert,
    conn: Conn,
    fwd: Side,
    rev: Side,
    num: int,
    ts: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    seglen: int,
    sack: list | None,
) -> dict | None | object:
    """`steady` for a segment with data: of the flags only window full can hold; then the
    bytes in flight, as `expertrules.in_flight` counts them (no SYN or FIN here)."""
    peer = rev.lastack
    if peer and peer != seq and not 0 < (seq + seglen - peer) & M < NEG:
        return GENERAL  # data acknowledged already (spurious retransmission)
    nextseq = seq + seglen
    if nextseq > M:
        nextseq -= WRAP
    ta = 0
    shift = rev.shift
    if shift >= 0:
        edge = rev.lastack + (rev.window << shift if shift else rev.window)
        if edge > M:
            edge -= WRAP
        if nextseq == edge:
            ta = WINDOW_FULL  # up to the edge of the peer's window
    mine = fwd.segs
    before = len(mine)  # 0: this segment is the only one unacknowledged (if kept)
    if before < ex.max_segments:
        mine.append((seq, nextseq, num, ts))
        ex.segments += 1
    fwd.nextseq, fwd.nextseq_frame, fwd.nextseq_ts = nextseq, num, ts
    if ack != fwd.lastack:
        fwd.lastack, fwd.lastnondupack, fwd.dupacknum = ack, num, 0
    top = fwd.maxseqtobeacked
    if seq == top or not top:
        fwd.maxseqtobeacked = nextseq
    fwd.window, fwd.lastack_ts, fwd.lastflags = window, ts, ta
    if fwd.first_ack or sack or fwd.sack or not conn.first_rtt and conn.mru_syn:
        _seldom(conn, fwd, ts, sack)
    fwd.bytes += seglen
    conn.data = True
    conn.last_ts = ts
    segs = rev.segs
    out: dict = {}
    if segs:
        if len(segs) == 1 and ack == segs[0][1]:
            s = segs.pop()
            ex.segments -= 1
        else:
            s = acked(ex, rev, ack)
        if s is not None:
            out["acks_frame"] = s[2]
            if ts != s[3]:
                out["ack_rtt"] = ts - s[3]
    if mine:  # bytes in flight (in line: a call less per segment)
        sacked = rev.sack
        if not before:  # the segment's own length
            bif = (seglen - sacked) & M if sacked else seglen
        else:
            bif = span(fwd.base_seq, mine, sacked)
        # the bytes sent since the last PSH, this segment's included
        push = fwd.push_bytes = seglen if fwd.push_last else fwd.push_bytes + seglen
        fwd.push_last = flags & PSH == PSH
        if 0 < bif < BIF_MAX:
            out["bytes_in_flight"] = bif
            out["push_bytes_sent"] = push
    elif not out and not ta:
        return None
    if ta:
        out["flags"] = ta
    if conn.first_rtt:
        out["initial_rtt"] = conn.first_rtt
    return out


def _seldom(conn: Conn, fwd: Side, ts: int, sack: list | None) -> None:
    """What a steady segment seldom changes: the window scale applies from the first ACK
    after the SYN, the SACK blocks, the initial RTT (the ACK that ends the handshake)."""
    if fwd.first_ack:
        fwd.first_ack = False
        fwd.shift = _shift(fwd)
    if sack:
        fwd.sack = sack_bytes(sack)
    elif fwd.sack:
        fwd.sack = 0
    if not conn.first_rtt and conn.mru_syn:
        conn.first_rtt = ts - conn.mru_syn
