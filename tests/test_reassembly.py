"""TCP reassembly: in-order delivery, retransmissions, holes, gaps, caps, flow table."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.tcp.reassembly import ACK, SYN, Budget, FlowTable, HalfStream, Limits

STREAM = bytes(range(256)) * 40  # 10240 bytes


def segments(data: bytes, isn: int, sizes: list[int]) -> list[tuple[int, bytes]]:
    """Cut `data` into segments of the given sizes (cycled), seq numbers from isn + 1."""
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(((isn + 1 + pos) & 0xFFFFFFFF, data[pos : pos + n]))
        pos += n
        i += 1
    return out


def half(limits: Limits | None = None, isn: int = 1000) -> HalfStream:
    hs = HalfStream(Budget(limits or Limits()))
    hs.syn(isn)
    return hs


def feed_all(hs: HalfStream, segs) -> tuple[bytes, int]:
    got = []
    gaps = 0
    for seq, payload in segs:
        out = hs.segment(seq, payload)
        gaps += hs.gap
        if out:
            got.append(out)
    return b"".join(got), gaps


def test_in_order_is_delivered_as_is_without_copy():
    hs = half()
    seg = STREAM[:100]
    assert hs.segment(1001, seg) is seg
    assert hs.next_seq == 1101


def test_retransmission_and_overlap_are_dropped():
    hs = half()
    assert hs.segment(1001, b"abcdef") == b"abcdef"
    assert hs.segment(1001, b"abcdef") is None  # full retransmission
    assert hs.retransmissions == 1
    assert hs.segment(1004, b"defghi") == b"ghi"  # overlap: only the new bytes
    assert hs.next_seq == 1010


def test_out_of_order_held_then_released_when_hole_fills():
    hs = half()
    assert hs.segment(1011, b"KLMNO") is None
    assert hs.segment(1006, b"FGHIJ") is None
    assert hs.held_bytes == 10
    assert hs.segment(1001, b"ABCDE") == b"ABCDEFGHIJKLMNO"
    assert hs.held_bytes == 0 and hs.budget.held == 0
    assert hs.gap == 0


def test_held_segment_overlapping_delivered_data_is_trimmed():
    hs = half()
    assert hs.segment(1004, b"DEFGH") is None
    assert hs.segment(1001, b"ABCDEF") == b"ABCDEFGH"


def test_any_segmentation_and_order_reassembles(seed=7):
    rnd = random.Random(seed)
    for isn in (1000, 0xFFFFFF00):  # the second wraps around 2**32 inside the stream
        segs = segments(STREAM, isn, [rnd.randint(1, 700) for _ in range(50)])
        rnd.shuffle(segs)
        segs += segs[:5]  # and some retransmissions
        hs = half(isn=isn)
        got, gaps = feed_all(hs, segs)
        assert got == STREAM
        assert gaps == 0


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 900), min_size=1, max_size=30),
    order=st.randoms(use_true_random=False),
    isn=st.integers(0, 0xFFFFFFFF),
)
def test_property_permuted_segments_reassemble(sizes, order, isn):
    data = STREAM[: sum(sizes)]  # one segment per size
    segs = segments(data, isn, sizes)
    order.shuffle(segs)
    got, gaps = feed_all(half(isn=isn), segs)
    assert got == data
    assert gaps == 0


def test_peer_ack_past_a_hole_reports_gap_and_goes_on():
    hs = half()
    assert hs.segment(1001, b"A" * 10) == b"A" * 10
    # bytes 1011..1020 never captured; 1021.. arrives
    assert hs.segment(1021, b"C" * 10) is None
    assert hs.peer_ack(1015) == b"C" * 10  # the receiver got bytes we never saw
    assert hs.gap == 10 and hs.gap_reason == "lost"
    assert hs.gaps == 1 and hs.gap_bytes == 10
    assert hs.segment(1031, b"D") == b"D"


def test_peer_ack_not_past_the_hole_keeps_waiting():
    hs = half()
    hs.segment(1001, b"A" * 10)
    hs.segment(1021, b"C" * 10)
    assert hs.peer_ack(1011) is None
    assert hs.held


def test_per_flow_cap_skips_the_hole_instead_of_growing():
    lim = Limits(flow_bytes=1000)
    hs = half(lim)
    hs.segment(1001, b"x")
    out = None
    for i in range(20):  # 100-byte segments after a 50-byte hole
        out = hs.segment(1052 + i * 100, b"y" * 100) or out
    assert hs.gap == 0 or hs.gaps >= 1
    assert hs.gaps >= 1 and hs.gap_reason == "memcap"
    assert hs.held_bytes <= 1000
    assert hs.budget.cap_hits >= 1


def test_total_cap_is_shared_across_streams():
    lim = Limits(flow_bytes=1 << 20, total_bytes=1500)
    budget = Budget(lim)
    a, b = HalfStream(budget), HalfStream(budget)
    a.syn(0)
    b.syn(0)
    a.segment(100, b"a" * 1000)
    assert budget.held == 1000
    b.segment(100, b"b" * 1000)  # over the total: b gives up its hole
    assert b.gaps == 1 and b.gap_reason == "memcap"
    assert budget.held <= 1500


def test_segment_count_cap():
    hs = half(Limits(max_segments=4))
    for i in range(6):
        hs.segment(1101 + 10 * i, b"z" * 5)
    assert hs.gaps >= 1
    assert len(hs.held) <= 4


def test_flush_delivers_held_data_across_holes():
    hs = half()
    hs.segment(1011, b"B" * 5)
    hs.segment(1031, b"D" * 5)
    assert hs.flush() == b"B" * 5 + b"D" * 5
    assert hs.gap == 25  # 10 before B, 15 between B and D
    assert hs.budget.held == 0


def test_midstream_start_without_syn():
    hs = HalfStream(Budget(Limits()))
    assert hs.segment(555, b"hello") == b"hello"
    assert hs.segment(560, b"!") == b"!"


def test_flow_table_idle_timeout_and_order():
    lim = Limits(idle_timeout_ns=10_000_000_000)
    t = FlowTable(lim)
    s = 1_000_000_000
    a, _ = t.get("a", 0, SYN, 1 * s, 1)
    b, _ = t.get("b", 0, SYN, 2 * s, 2)
    t.get("a", 1, SYN | ACK, 3 * s, 3)  # a becomes the most recent
    assert [c.key for c in t.expired(12 * s + 500)] == ["b"]
    assert [c.key for c in t.expired(14 * s)] == ["a"]
    assert not t.conns
    assert a.orig == 0 and b.orig == 0


def test_flow_table_synack_first_sets_originator():
    t = FlowTable()
    c, _ = t.get("k", 1, SYN | ACK, 0, 1)
    assert c.orig == 0


def test_flow_table_full_evicts_oldest():
    t = FlowTable(Limits(max_flows=3))
    for i in range(3):
        t.get(i, 0, SYN, i, i + 1)
    _, evicted = t.get(99, 0, SYN, 10, 5)
    assert [c.key for c in evicted] == [0]
    assert t.evicted_full == 1
    assert len(t.conns) == 3


def test_closed_connection_reused_by_new_syn():
    t = FlowTable()
    c, _ = t.get("k", 0, SYN, 0, 1)
    c.closed = True
    c2, evicted = t.get("k", 0, SYN, 5, 2)
    assert c2 is not c and evicted == [c]


def test_conn_states():
    t = FlowTable()
    c, _ = t.get("k", 0, SYN, 0, 1)
    assert c.state() == "OTH"  # the analyzer records what it saw
    c.syn = True
    assert c.state() == "S0"
    c.rst = 1
    assert c.state() == "REJ"
    c.rst = -1
    c.synack = True
    assert c.state() == "S1"
    c.fins = [True, True]
    assert c.state() == "SF"
    c.rst = 0
    assert c.state() == "RSTO"


def test_due_shortcut_agrees_with_due():
    """`ts >= next_tick` (the tracker's per-segment test) is true exactly when `due` may be."""
    rnd = random.Random(7)
    a, b = FlowTable(), FlowTable()
    ts = rnd.randrange(10**18)
    for _ in range(2000):
        ts += rnd.choice((0, 1, 999_999_999, 10**9, 3 * 10**9 + 7, rnd.randrange(10**8)))
        assert (ts >= b.next_tick and b.due(ts)) == a.due(ts)
        assert (ts >= b.next_tick) == (ts // 1_000_000_000 > b._tick)


def test_tracker_keeps_conns_in_activity_order():
    """The tracker skips moving the connection of the previous segment to the end of the
    table (it is there already): the order stays that of the last activity, with idle
    timeouts, port reuse and closes in between."""
    from pcaptool.tcp.connections import ConnectionTracker
    from pcaptool.tcp.stream import Segment

    rnd = random.Random(3)
    lim = Limits(idle_timeout_ns=5_000_000_000, linger_ns=1_000_000_000)
    tr = ConnectionTracker(limits=lim)
    keys = [f"k{i}" for i in range(6)]
    ts = 10**18
    last: dict[str, int] = {}
    for n in range(1, 3000):
        key = rnd.choice(keys[:2] if rnd.random() < 0.5 else keys)
        ts += rnd.choice((1000, 10**6, 2 * 10**9))
        flags = rnd.choice((SYN, ACK, ACK, ACK, ACK | 0x01, ACK | 0x04, SYN | ACK))
        d = rnd.randrange(2)
        seg = Segment("a", 1, "b", 2, n * 10, n, flags, b"", ts, n)
        tr.segment({}, key, d, seg)
        last[key] = n
        conns = tr.table.conns
        assert list(conns) == sorted(conns, key=last.__getitem__)
        assert tr.table.last is None or tr.table.last is list(conns.values())[-1]
        assert all(c.last_num == last[k] for k, c in conns.items())
