"""Protocol detection that re-synchronises: keep-alive bytes, banners, junk, cut start
lines, HTTP/2 preface and frames, TLS, gaps. Every case builds its own bytes."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.http.sniff import CARRY, H2_PREFACE, Sniffer

GET = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


def test_one_byte_keepalive_then_request():
    s = Sniffer()
    assert s.feed(b"\x00") is None
    f = s.feed(GET)
    assert f.kind == "request" and f.skipped == 1 and f.data == GET


def test_banner_then_status_line_and_junk_then_request():
    s = Sniffer()
    f = s.feed(b"220 proxy ready\r\nHTTP/1.1 200 OK\r\n\r\n")
    assert f.kind == "response" and f.skipped == len(b"220 proxy ready\r\n")
    s = Sniffer()
    assert s.feed(b"\x05\x01\x00" * 200) is None
    f = s.feed(GET)
    assert f.kind == "request" and f.skipped == 600 and len(s.buf) <= CARRY


def test_start_line_cut_by_a_segment_boundary():
    s = Sniffer()
    assert s.feed(b"junk junk GET /x HT") is None
    f = s.feed(b"TP/1.1\r\n\r\n")
    assert f.kind == "request" and f.data == b"GET /x HTTP/1.1\r\n\r\n" and f.skipped == 10


def test_h2_preface_frames_and_tls():
    assert Sniffer().feed(b"\r\n" + H2_PREFACE).kind == "h2"
    settings_frame = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + struct.pack(">HI", 3, 100)
    assert Sniffer().feed(settings_frame).kind == "h2frames"
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    f = Sniffer().feed(b"\x00\x00" + hello)
    assert f.kind == "tls" and f.skipped == 2


def test_gap_drops_the_carry():
    s = Sniffer()
    s.feed(b"GET /x HT")
    s.gap(100)
    assert s.feed(b"TP/1.1\r\n\r\n") is None and s.pending() >= 109


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_property_junk_then_request_is_found_whatever_the_cuts(junk, step):
    junk = junk.replace(b"HTTP/1", b"").replace(b"\x16\x03", b"")
    data = junk + b"\r\n" + GET
    s = Sniffer(frames=False)
    found, rest = None, b""
    for i in range(0, len(data), step):
        if found is None:
            found = s.feed(data[i : i + step])
        else:
            rest += data[i : i + step]
    assert found is not None and (found.data + rest).endswith(GET)
    assert found.skipped + len(found.data) + len(rest) == len(data)


def test_known_method_after_a_letter_byte():
    # a SOCKS5 request ends with port 80 ("\x00P") right before the GET
    f = Sniffer().feed(b"\x05\x01\x00\x03\x03abc\x00P" + GET)
    assert f.kind == "request" and f.data == GET
    assert Sniffer().feed(b"\x00PURGE /x HTTP/1.1\r\n\r\n").data.startswith(b"PURGE")
