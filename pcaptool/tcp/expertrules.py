"""The rules of Wireshark 4.0's `tcp_analyze_sequence_number` (epan/dissectors/packet-tcp.c)
for one segment, in its order: the tests on this direction's state, ACKed unseen segment,
the kinds of retransmission, the segments an ACK covers, bytes in flight. Fed and called
by pcaptool/tcp/expert.py, which owns the connections."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcaptool.tcp.expertflags import (
    ACK,
    ACK_LOST_PACKET,
    DUPLICATE_ACK,
    FAST_RETRANSMISSION,
    FIN,
    KEEP_ALIVE,
    KEEP_ALIVE_ACK,
    LOST_PACKET,
    OUT_OF_ORDER,
    PSH,
    RETRANSMISSION,
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
from pcaptool.tcp.expertstate import ACKED_UNSEEN, Conn, M, Side

if TYPE_CHECKING:
    from pcaptool.tcp.expert import TcpExpert

NEG = 0x80000000  # (x - y) & M >= NEG  <=>  (int32)(x - y) < 0
FAST_RT_NS = 20_000_000  # a retransmission within 20 ms of the 2nd duplicate ACK is fast
OOO_NS = 3_000_000  # out-of-order window while the initial RTT is unknown


def sack_bytes(sack: list) -> int:
    """Bytes in the SACK blocks Wireshark keeps for bytes in flight: the first three."""
    total = 0
    for left, right in sack[:3]:
        total += (right - left) & M
    return total


def analyze(
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
    made: bool,
) -> dict | None:
    """Wireshark's tcp_analyze_sequence_number for one segment; the flag bits and values
    (`made`: Wireshark has created its per-packet record for this segment already)."""
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
    if ack != fwd.lastack:
        fwd.lastnondupack = num
        fwd.dupacknum = 0
    out: dict = {}
    if rev.maxseqtobeacked and (rev.maxseqtobeacked - ack) & M >= NEG and flags & ACK:
        made = True
        ta |= _acked_unseen(rev)
    if seglen > 0 or flags & (SYN | FIN):
        rt = _retransmission(conn, fwd, rev, ts, seq, seglen, flags, ta, nextseq0)
        if rt == RETRANSMISSION:
            _rto(fwd, ts, out)
        ta |= rt
    _remember(ex, fwd, num, ts, seq, seglen, flags, ta)
    fwd.window = window
    fwd.lastack = ack
    fwd.lastack_ts = ts
    if ta & DUPLICATE_ACK:
        out["duplicate_ack_num"] = fwd.dupacknum
        out["duplicate_ack_frame"] = fwd.lastnondupack
    fwd.lastflags = ta
    hit = acked(ex, rev, ack) if rev.segs else None
    if hit is not None:
        out["acks_frame"] = hit[2]
        if ts != hit[3]:
            out["ack_rtt"] = ts - hit[3]
    if seglen and fwd.segs and fwd.valid_bif:
        in_flight(fwd, rev, seglen, flags, out)
    elif not made and not ta and hit is None:
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
        # Wireshark restarts the count from an ACKed unseen segment's mark at 1
        fwd.dupacknum = 1 if fwd.dupacknum == ACKED_UNSEEN else fwd.dupacknum + 1
        ta |= DUPLICATE_ACK
    return ta


def _acked_unseen(rev: Side) -> int:
    """ACKed unseen segment: the ACK is beyond the highest contiguous number seen from the
    peer. Said once: the peer's mark moves on, or, when the peer only sends ACKs, its
    dupacknum is set to (guint32)-1 until its ACK number changes (as Wireshark 4.0 does,
    which also makes its `dupacknum >= 2` test for a fast retransmission true)."""
    if rev.maxseqtobeacked < rev.nextseq:  # a plain comparison, as in Wireshark 4.0
        rev.maxseqtobeacked = rev.nextseq
        return ACK_LOST_PACKET
    flag = ACK_LOST_PACKET if rev.dupacknum == 0 else 0
    rev.dupacknum = ACKED_UNSEEN
    return flag


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
    t = ts - rev.lastack_ts  # unsigned in Wireshark: a time going back is never "within"
    if behind and rev.dupacknum >= 2 and rev.lastack == seq and 0 <= t < FAST_RT_NS:
        return FAST_RETRANSMISSION
    t = ts - fwd.nextseq_ts
    thres = conn.first_rtt or OOO_NS
    end = (seq + seglen + (1 if flags & (SYN | FIN) else 0)) & M
    if behind and 0 <= t < thres and nextseq != end:
        return OUT_OF_ORDER
    return RETRANSMISSION if behind else 0


def _rto(fwd: Side, ts: int, out: dict) -> None:
    """A retransmission's time since the oldest unacknowledged segment (else since the
    highest one) and that segment's frame."""
    ref_ts, ref_frame = fwd.nextseq_ts, fwd.nextseq_frame
    if fwd.segs:
        ref_frame, ref_ts = fwd.segs[0][2], fwd.segs[0][3]
    if ts != ref_ts:
        out["rto"] = ts - ref_ts
        out["rto_frame"] = ref_frame


def _remember(
    ex: TcpExpert, fwd: Side, num: int, ts: int, seq: int, seglen: int, flags: int, ta: int
) -> None:
    """Keep the segment until it is acknowledged; move the next expected sequence number
    and the highest contiguous one (a zero-window probe moves neither)."""
    nextseq = (seq + seglen) & M
    if seglen or flags & (SYN | FIN):
        if flags & (SYN | FIN):
            nextseq = (nextseq + 1) & M
        if len(fwd.segs) < ex.max_segments:
            fwd.segs.append((seq, nextseq, num, ts))
            ex.segments += 1
    if not ta & ZERO_WINDOW_PROBE:
        if not fwd.nextseq or (fwd.nextseq - nextseq) & M >= NEG:
            fwd.nextseq, fwd.nextseq_frame, fwd.nextseq_ts = nextseq, num, ts
        if seq == fwd.maxseqtobeacked or not fwd.maxseqtobeacked:
            fwd.maxseqtobeacked = fwd.nextseq


def acked(ex: TcpExpert, rev: Side, ack: int) -> tuple | None:
    """Drop the other direction's segments this ACK covers; return the one whose end it
    acknowledges exactly (the oldest such), or None."""
    segs = rev.segs
    if len(segs) == 1:  # the common case, without the list walk
        s = segs[0]
        if ack != s[1]:
            if (ack - s[1]) & M >= NEG:  # before the segment's end: kept
                if (s[0] - ack) & M >= NEG:  # partly acknowledged: keep the rest
                    segs[0] = (ack, s[1], s[2], s[3])
                return None
            s = None  # beyond its end: dropped
        segs.clear()
        ex.segments -= 1
        return s
    hit = None
    keep = []
    for s in reversed(segs):  # Wireshark walks its list newest first
        if ack == s[1]:
            hit = s
        elif (ack - s[0]) & M and (s[0] - ack) & M >= NEG and (s[1] - ack) & M < NEG:
            keep.append((ack, s[1], s[2], s[3]))  # partly acknowledged: keep the rest
        elif (ack - s[1]) & M >= NEG:  # after this ACK: keep
            keep.append(s)
    keep.reverse()
    rev.segs = keep
    ex.segments -= len(segs) - len(keep)
    return hit


def in_flight(fwd: Side, rev: Side, seglen: int, flags: int, out: dict) -> None:
    """Bytes in flight after this segment (Wireshark's payload-based method): from the
    lowest unacknowledged sequence number to the highest end, relative to the ISN."""
    segs = fwd.segs
    in_flight = span(fwd.base_seq, segs, rev.sack)
    shown = False  # tshark shows the PSH count only with bytes in flight, never 0 of them
    if 0 < in_flight < 2_000_000_000:
        if flags & (SYN | FIN):
            in_flight -= 1  # the SYN or FIN's sequence number is no byte
        if in_flight:
            out["bytes_in_flight"] = in_flight
            shown = True
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


def span(base: int, segs: list, sacked: int) -> int:
    """Bytes in flight of the unacknowledged segments `segs` (`Side.segs`, not empty): from
    the lowest sequence number to the highest end, relative to `base` (one: its length)."""
    s = segs[0]
    if len(segs) == 1:
        return (s[1] - s[0] - sacked) & M
    first, last = (s[0] - base) & M, (s[1] - base) & M
    for s in segs:
        lo, hi = (s[0] - base) & M, (s[1] - base) & M
        if lo < first:
            first = lo
        if hi > last:
            last = hi
    return (last - first - sacked) & M
