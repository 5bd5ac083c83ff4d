"""walk()'s fast path (pcaptool/decode/fastpath.py) fills records exactly as the dispatch
tables do: same objects, same key order, same answer, same errors, on packets built here
with every header field varied and cut at every length, and on every corpus packet."""

from __future__ import annotations

import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packets import MAC_A, MAC_B, eth, ip4, tcp, udp

from conftest import corpus_files
from pcaptool.capfile.reader import LINKTYPE_ETHERNET, CaptureReader, open_input
from pcaptool.decode import Truncated
from pcaptool.decode.fastpath import eth_ipv4
from pcaptool.decode.table import walk, walk_tables


def outcome(fn, frame: bytes, linktype: int = LINKTYPE_ETHERNET):
    """(what the walk returned or raised, the record as JSON: key order included)."""
    rec: dict = {}
    try:
        got = fn(frame, linktype, rec)
        got = (got[0], getattr(got[1], "name", None), got[2], got[3], got[4])
    except Truncated as exc:
        got = ("Truncated", exc.layer, exc.reason)
    return got, orjson.dumps(rec)


def assert_same(frame: bytes, linktype: int = LINKTYPE_ETHERNET) -> None:
    assert outcome(walk, frame, linktype) == outcome(walk_tables, frame, linktype), frame.hex()


def tcp_header(sport, dport, seq, ack, doff, flags, win, urg, opts: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0, urg) + opts


OPTIONS = (
    b"",
    b"\x01\x01\x08\x0a" + struct.pack("!II", 7, 9),  # Linux's NOP NOP TS
    b"\x01\x01\x08\x0a" + struct.pack("!II", 7, 9)[:6] + b"\x00\x00",  # TS cut: malformed
    b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02\x00\x00",  # SYN's MSS, wscale, SACK-permitted
    b"\x01\x01\x05\x0a" + struct.pack("!II", 1, 2),  # one SACK block
    b"\x01\x01\x08\x0b" + bytes(8),  # a length past the header
)
PAYLOADS = (b"", b"x", b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")


@settings(max_examples=400, deadline=None)
@given(
    sport=st.sampled_from((80, 443, 53, 40000, 8080)),
    dport=st.sampled_from((80, 443, 53, 50000, 5353)),
    seq=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 255),
    urg=st.sampled_from((0, 1, 0xFFFF)),
    opts=st.sampled_from(OPTIONS),
    doff_delta=st.sampled_from((0, 0, 0, -1, 1, -6, 10)),
    payload=st.sampled_from(PAYLOADS),
    frag=st.sampled_from((0, 0x4000, 0x2000, 0x0001, 0x8000, 0x6000)),
    total_delta=st.sampled_from((0, 0, -1, -30, 10, None)),
    padding=st.sampled_from((b"", bytes(6))),
    cut=st.integers(0, 120),
)
def test_tcp_over_ipv4_decodes_as_the_tables_do(
    sport, dport, seq, flags, urg, opts, doff_delta, payload, frag, total_delta, padding, cut
) -> None:
    doff = max(0, min(15, 5 + len(opts) // 4 + doff_delta))
    seg = tcp_header(sport, dport, seq, seq ^ 0x5A5A, doff, flags, 502, urg, opts) + payload
    ip = bytearray(ip4(seg, 6, frag=frag))
    if total_delta is None:
        ip[2:4] = b"\x00\x00"  # TSO: no total length
    else:
        ip[2:4] = struct.pack("!H", max(0, len(ip) + total_delta))
    frame = eth(bytes(ip)) + padding
    assert_same(frame)
    assert_same(frame[: len(frame) - cut])


@settings(max_examples=300, deadline=None)
@given(
    sport=st.sampled_from((53, 4789, 6081, 5353, 40000)),
    dport=st.sampled_from((53, 123, 4789, 50000)),
    payload=st.sampled_from((b"", b"x", bytes(12), eth(ip4(udp(1, 2, b"in"), 17)))),
    length_delta=st.sampled_from((0, 0, -1, -9, 5, None)),
    padding=st.sampled_from((b"", bytes(6))),
    cut=st.integers(0, 60),
)
def test_udp_over_ipv4_decodes_as_the_tables_do(
    sport, dport, payload, length_delta, padding, cut
) -> None:
    dgram = bytearray(udp(sport, dport, payload))
    if length_delta is None:
        dgram[4:6] = b"\x00\x00"
    else:
        dgram[4:6] = struct.pack("!H", max(0, len(dgram) + length_delta))
    frame = eth(ip4(bytes(dgram), 17)) + padding
    assert_same(frame)
    assert_same(frame[: len(frame) - cut])


@pytest.mark.parametrize(
    "frame",
    [
        eth(ip4(tcp(40000, 80, b"x"), 6), vlans=(7,)),  # tagged: the tables
        eth(ip4(b"\x08\x00\x00\x00\x00\x01\x00\x01", 1)),  # ICMP: the tables
        eth(b"\x46" + ip4(tcp(1, 2), 6)[1:] + bytes(4)),  # IP options: the tables
        eth(b"\x55" + ip4(tcp(1, 2), 6)[1:]),  # version 5: an error from the tables
        MAC_B + MAC_A + b"\x86\xdd" + bytes(40),  # IPv6
        eth(ip4(tcp(40000, 80), 6, frag=0x2000)),  # a first fragment
        eth(ip4(tcp(40000, 80), 6, frag=0x0010)),  # a later fragment
    ],
)
def test_what_the_fast_path_declines_the_tables_decode(frame: bytes) -> None:
    assert eth_ipv4(frame, {}) is None
    assert_same(frame)


def test_the_fast_path_takes_plain_tcp_and_udp() -> None:
    assert eth_ipv4(eth(ip4(tcp(40000, 80, b"GET"), 6)), {}) is not None
    assert eth_ipv4(eth(ip4(udp(40000, 53, b"q"), 17)), {}) is not None


def test_every_corpus_packet_decodes_as_the_tables_do() -> None:
    files = [p for p in corpus_files() if p.suffix in (".pcap", ".pcapng", ".gz", ".cap")]
    if not files:
        pytest.skip("no corpus")
    checked = 0
    for path in files:
        try:
            with open_input(str(path)) as f:
                for pkt in CaptureReader(f, path.name):
                    assert_same(pkt.data, pkt.linktype)
                    checked += pkt.linktype == LINKTYPE_ETHERNET
        except Exception as exc:  # a broken capture of the corpus: its packets before the break
            if type(exc).__name__ != "CaptureFormatError":
                raise
    assert checked > 1000
