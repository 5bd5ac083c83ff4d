"""`Framer.packets()` (what CaptureReader reads through) yields exactly the packets of
`Framer.feed()`'s PACKET events, with the same count, offsets and errors, however the
bytes arrive: plain pcap (its own loop), pcapng, concatenated streams, cut or corrupt."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.capfile.framing import PACKET, Framer
from pcaptool.capfile.reader import PcapngWriter, PcapWriter
from pcaptool.errors import CaptureFormatError

T0 = 1_700_000_000_123_456_789


def _pcap(nanosecond: bool, sizes: list[int], big_endian: bool = False) -> bytes:
    out = io.BytesIO()
    w = PcapWriter(out, 1, nanosecond=nanosecond)
    for i, n in enumerate(sizes):
        w.write(T0 + i * 1_234_567, bytes([i % 256]) * n, n + i % 3)
    data = out.getvalue()
    if not big_endian:
        return data
    # the same stream, written big-endian: header and record headers swapped
    swapped = bytearray(struct.pack(">IHHiIII", *struct.unpack_from("<IHHiIII", data)))
    pos = 24
    while pos < len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        swapped += struct.pack(">IIII", sec, frac, incl, orig) + data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
    return bytes(swapped)


def _pcapng(sizes: list[int]) -> bytes:
    out = io.BytesIO()
    w = PcapngWriter(out)
    idx = w.add_interface(1, name="eth0")
    for i, n in enumerate(sizes):
        w.write(idx, T0 + i, bytes([i % 256]) * n)
    return out.getvalue()


def _run(data: bytes, cuts: list[int], packets: bool):
    """(packets, count, offset, error) reading `data` in the pieces `cuts` makes."""
    framer = Framer("x")
    got, error, pos = [], None, 0
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    try:
        for end in bounds:
            chunk, pos = data[pos:end], end
            if packets:
                for pkt in framer.packets(chunk):
                    got.append(pkt)
            else:
                for kind, _start, _end, info in framer.feed(chunk):
                    if kind is PACKET:
                        got.append(info)
        framer.close()
    except CaptureFormatError as exc:
        error = str(exc)
    return got, framer.count, framer.offset, error


def _same(data: bytes, cuts: list[int]) -> None:
    assert _run(data, cuts, True) == _run(data, cuts, False)


SIZES = st.lists(st.integers(0, 300), max_size=12)
CUTS = st.lists(st.integers(0, 10_000), max_size=8)


@settings(max_examples=150, deadline=None)
@given(sizes=SIZES, cuts=CUTS, nanosecond=st.booleans(), big_endian=st.booleans())
def test_pcap_packets_match_feed(sizes, cuts, nanosecond, big_endian) -> None:
    data = _pcap(nanosecond, sizes, big_endian)
    _same(data, cuts)
    got, count, _, error = _run(data, cuts, True)
    assert count == len(got) == len(sizes) and error is None
    assert [p.caplen for p in got] == sizes
    assert [len(p.data) for p in got] == sizes


@settings(max_examples=80, deadline=None)
@given(a=SIZES, b=SIZES, c=SIZES, cuts=CUTS)
def test_concatenated_streams_match_feed(a, b, c, cuts) -> None:
    _same(_pcap(True, a) + _pcapng(b) + _pcap(False, c), cuts)


@settings(max_examples=80, deadline=None)
@given(sizes=SIZES, cuts=CUTS, cut=st.integers(1, 400))
def test_a_stream_cut_short_fails_alike(sizes, cuts, cut) -> None:
    data = _pcap(True, sizes + [200])
    _same(data[: len(data) - cut], cuts)


@pytest.mark.parametrize("incl", [262_145, 0xFFFFFFF0])
def test_an_oversized_record_fails_alike_after_the_packets_before_it(incl) -> None:
    data = _pcap(True, [10, 20])
    bad = struct.pack("<IIII", 1, 2, incl, incl) + bytes(64)
    _same(data + bad, [30, 50])
    got, _count, _offset, error = _run(data + bad, [30, 50], True)
    assert len(got) == 2 and "exceeds the limit" in error and "packet record 3" in error
