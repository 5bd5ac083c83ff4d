"""TLS ClientHello read from the reassembled stream: split over segments and records,
GREASE, ECH. The hellos are built here byte by byte."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.http.tlshello import HelloReader, parse_client_hello


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack(">HH", etype, len(data)) + data


def client_hello(sni="api.example.com", alpn=(b"\x0a\x0a", b"h2", b"http/1.1"), pad=0, ech=False):
    name = sni.encode()
    exts = ext(0x1A1A, b"")  # GREASE extension
    exts += ext(0, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
    protos = b"".join(bytes([len(p)]) + p for p in alpn)
    exts += ext(16, struct.pack(">H", len(protos)) + protos)
    exts += ext(43, bytes([6]) + b"\x7a\x7a\x03\x04\x03\x03")  # GREASE, 1.3, 1.2
    exts += ext(51, b"\x00" * pad)  # a big key_share (post-quantum hybrids are ~1.2 KB)
    if ech:
        exts += ext(0xFE0D, b"\x00\x00\x01\x00\x01\x01\x00\x00")
    body = b"\x03\x03" + b"\x11" * 32 + b"\x20" + b"\x22" * 32
    body += struct.pack(">H", 4) + b"\x13\x01\x13\x02" + b"\x01\x00"
    body += struct.pack(">H", len(exts)) + exts
    return b"\x01" + len(body).to_bytes(3, "big") + body


def records(hs: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(hs), size):
        frag = hs[i : i + size]
        out += b"\x16\x03\x01" + struct.pack(">H", len(frag)) + frag
    return out


def test_hello_fields_grease_left_out_and_counted():
    d = parse_client_hello(client_hello()[4:])
    assert d["sni"] == "api.example.com" and d["alpn"] == ["h2", "http/1.1"]
    assert d["supported_versions"] == ["TLS 1.3", "TLS 1.2"] and d["hello_version"] == "TLS 1.2"
    assert d["grease"] == 3 and "ech" not in d


def test_hello_split_over_segments_and_records_with_ech():
    hs = client_hello(pad=1800, ech=True)
    stream = records(hs, 700) + b"\x17\x03\x03\x00\x05hello"
    r = HelloReader()
    got = [r.feed(stream[i : i + 536]) for i in range(0, len(stream), 536)]
    done = [g for g in got if g]
    assert len(done) == 1 and got.index(done[0]) == (len(records(hs, 700)) - 1) // 536
    assert done[0]["sni"] == "api.example.com" and done[0]["ech"] is True
    assert done[0]["records"] == (len(hs) + 699) // 700 and r.done


def test_not_a_hello_ends_the_reader():
    r = HelloReader()
    assert r.feed(b"\x17\x03\x03\x00\x02ab") is None and r.done
    r = HelloReader()
    assert r.feed(records(b"\x02\x00\x00\x01\x00", 100)) is None and r.done  # ServerHello


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 100))
def test_property_any_bytes_never_raise(data, step):
    r = HelloReader()
    stream = b"\x16\x03\x01" + struct.pack(">H", len(data)) + data
    for i in range(0, len(stream), step):
        r.feed(stream[i : i + step])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3000), st.integers(50, 2000), st.integers(0, 2500))
def test_property_every_split_gives_the_same_hello(seg, rec, pad):
    hs = client_hello(pad=pad)
    stream = records(hs, rec)
    r = HelloReader()
    got = [g for i in range(0, len(stream), seg) if (g := r.feed(stream[i : i + seg]))]
    assert got[0]["sni"] == "api.example.com" and got[0]["alpn"] == ["h2", "http/1.1"]
