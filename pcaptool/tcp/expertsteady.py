"""The steady path of the TCP expert analysis (pcaptool/tcp/expert.py).

Most segments of a healthy connection are in order, carry an ACK and no SYN/FIN/RST, no
window is zero, and both directions are past their handshake, any zero window and any
loss (`Side.calm`, kept by the general path). For those only a few tests can hold (window
full, the ACKed segment, bytes in flight), so `steady` runs only those, with the same
results as the general path (`tests/test_expert_paths.py` compares the two), and returns
`GENERAL` for any other segment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcaptool.tcp.expertflags import PSH, WINDOW_FULL
from pcaptool.tcp.expertrules import NEG, acked, sack_bytes
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
    hit: tuple,
    num: int,
    ts: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    seglen: int,
    sack: list | None,
) -> dict | None | object:
    """The analysis of an ACK segment without SYN/FIN/RST and without a window scale
    option (`hit`: its connection entry), or GENERAL."""
    conn, _, fwd, rev = hit
    # in order (no loss, keep-alive or retransmission), no window is zero (no zero-window
    # probe), both sides calm
    if seq != fwd.nextseq or not (seq and window and fwd.calm and rev.calm):
        return GENERAL
    top = rev.maxseqtobeacked
    if ack != top and top and (top - ack) & M >= NEG:
        return GENERAL  # an ACKed unseen segment
    if seglen:
        peer = rev.lastack
        if peer and peer != seq and not 0 < (seq + seglen - peer) & M < NEG:
            return GENERAL  # data acknowledged already (spurious retransmission)
        return _data(ex, conn, fwd, rev, num, ts, seq, ack, flags, window, seglen, sack)
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
    if fwd.first_ack:  # its first ACK after its SYN: its window scale applies now
        fwd.first_ack = False
        fwd.shift = _shift(fwd)
    if sack:
        fwd.sack = sack_bytes(sack)
    elif fwd.sack:
        fwd.sack = 0
    conn.last_ts = ts
    if not conn.first_rtt and conn.mru_syn:  # the ACK that ends the handshake
        conn.first_rtt = ts - conn.mru_syn
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


def _data(
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
) -> dict | None:
    """`steady` for a segment with data: of the flags only window full can hold."""
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
    alone = False  # this segment is the only one unacknowledged
    if len(mine) < ex.max_segments:
        alone = not mine
        mine.append((seq, nextseq, num, ts))
        ex.segments += 1
    fwd.nextseq = nextseq
    fwd.nextseq_frame = num
    fwd.nextseq_ts = ts
    if ack != fwd.lastack:
        fwd.lastack = ack
        fwd.lastnondupack = num
        fwd.dupacknum = 0
    top = fwd.maxseqtobeacked
    if seq == top or not top:
        fwd.maxseqtobeacked = nextseq
    fwd.window = window
    fwd.lastack_ts = ts
    fwd.lastflags = ta
    if fwd.first_ack:
        fwd.first_ack = False
        fwd.shift = _shift(fwd)
    if sack:
        fwd.sack = sack_bytes(sack)
    elif fwd.sack:
        fwd.sack = 0
    fwd.bytes += seglen
    conn.data = True
    conn.last_ts = ts
    if not conn.first_rtt and conn.mru_syn:
        conn.first_rtt = ts - conn.mru_syn
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
    if mine:
        _in_flight(fwd, rev.sack, seglen, flags, out, alone)
    elif not out and not ta:
        return None
    if ta:
        out["flags"] = ta
    if conn.first_rtt:
        out["initial_rtt"] = conn.first_rtt
    return out


def _in_flight(fwd: Side, sacked: int, seglen: int, flags: int, out: dict, alone: bool) -> None:
    """`expertrules.in_flight` for a steady segment (no SYN or FIN); `alone`: the only
    unacknowledged segment is this one."""
    segs = fwd.segs
    s = segs[0]
    if alone:
        bif = seglen - sacked if sacked else seglen
        if bif < 0:
            bif &= M
    elif len(segs) == 1:
        bif = (s[1] - s[0] - sacked) & M
    else:
        base = fwd.base_seq
        first, last = (s[0] - base) & M, (s[1] - base) & M
        for s in segs:
            lo, hi = (s[0] - base) & M, (s[1] - base) & M
            if lo < first:
                first = lo
            if hi > last:
                last = hi
        bif = (last - first - sacked) & M
    if flags & PSH:
        push = seglen if fwd.push_last else fwd.push_bytes + seglen
        fwd.push_last = True
    elif fwd.push_last:
        push = seglen
        fwd.push_last = False
    else:
        push = fwd.push_bytes + seglen
    fwd.push_bytes = push
    if 0 < bif < BIF_MAX:
        out["bytes_in_flight"] = bif
        out["push_bytes_sent"] = push
