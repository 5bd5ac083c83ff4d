"""HTTP/2 on imperfect captures: mid-connection HPACK, open streams at the end, resets from
either side, gaps and re-synchronisation. Every case builds its own frames."""

from __future__ import annotations

import struct

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.http.hpack_tolerant import UNKNOWN, TolerantDecoder
from pcaptool.http.http2 import PREFACE, H2Connection
from pcaptool.http.sniff import find_h2_frame, frame_end

C, S = 0, 1


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([ftype, flags])
        + struct.pack(">I", sid)
        + payload
    )


def req(path: str, method: str = "POST", **extra) -> list[tuple[str, str]]:
    h = [(":method", method), (":scheme", "http"), (":authority", "svc"), (":path", path)]
    return h + [(k.replace("_", "-"), v) for k, v in extra.items()]


def types(msgs) -> list[str]:
    return [d["type"] for _, d in msgs]


# -- tolerant HPACK --------------------------------------------------------------------

header = st.tuples(
    st.sampled_from([":path", "content-type", "x-a", "x-b", "user-agent", "grpc-status"]),
    st.text(alphabet="abcdefghij/0123", max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(header, max_size=8), min_size=1, max_size=6), st.booleans())
def test_tolerant_decoder_equals_hpack_on_a_whole_connection(blocks, huffman):
    enc, ref, mine = hpack.Encoder(), hpack.Decoder(), TolerantDecoder()
    for hl in blocks:
        data = enc.encode(hl, huffman=huffman)
        got = mine.decode(data)
        assert got.error is None and got.unknown == 0
        assert got.fields == ref.decode(data, raw=True)


def test_midstream_block_resolves_static_and_literals_and_learns_new_entries():
    enc = hpack.Encoder()
    enc.encode(req("/svc/Old", user_agent="grpc-go"))  # adds entries we never see
    mine = TolerantDecoder(complete=False)
    block = enc.encode(req("/svc/Old", user_agent="grpc-go", x_new="v1"))
    fields = mine.decode(block).fields
    got = dict(fields)
    assert got[b":method"] == b"POST" and got[b":scheme"] == b"http"  # static table
    # :authority, :path and user-agent were added to the table before the capture began
    assert fields.count((UNKNOWN, UNKNOWN)) == 3 and b":path" not in got
    assert got[b"x-new"] == b"v1"  # literal, learned
    assert mine.unknown_total >= 2
    # the entry learned from the third block resolves in the fourth
    got = dict(mine.decode(enc.encode(req("/svc/Old", x_new="v1"))).fields)
    assert got[b"x-new"] == b"v1"


def test_malformed_block_keeps_the_fields_before_the_error():
    mine = TolerantDecoder()
    res = mine.decode(b"\x82\x86\x41\x7f")  # :method GET, :scheme http, cut literal
    assert res.fields == [(b":method", b"GET"), (b":scheme", b"http")]
    assert res.error is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_tolerant_decoder_never_raises(data):
    TolerantDecoder(complete=False).decode(data)


def test_midstream_connection_reports_method_status_and_counts_unknown():
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    enc_c.encode(req("/a", user_agent="x"))
    enc_s.encode([(":status", "200"), ("server", "envoy")])
    h2 = H2Connection(mid=True)
    _, msgs = h2.feed(C, frame(1, 0x5, 5, enc_c.encode(req("/a", user_agent="x"))), 10)
    (_, r) = msgs[0]
    assert r["method"] == "POST" and r["target"] is None and r["hpack_unknown"] >= 1
    frames, msgs = h2.feed(
        S, frame(1, 0x5, 5, enc_s.encode([(":status", "200"), ("server", "envoy")])), 30
    )
    (_, d) = msgs[0]
    assert d["type"] == "response" and d["status"] == 200 and d["latency"] == 20
    assert not h2.errors  # unknown entries of a mid-stream capture are not errors


# -- open streams, resets ------------------------------------------------------------


def prior_knowledge() -> tuple[H2Connection, hpack.Encoder, hpack.Encoder]:
    h2 = H2Connection()
    h2.expect_preface(C)
    h2.feed(C, PREFACE + frame(4, 0, 0), 0)
    h2.feed(S, frame(4, 0, 0), 1)
    return h2, hpack.Encoder(), hpack.Encoder()


def test_response_headers_reported_on_arrival_and_open_stream_flushed_at_end():
    h2, ec, es = prior_knowledge()
    h2.feed(C, frame(1, 0x4, 1, ec.encode(req("/pkg.S/Watch"))), 10)
    h2.feed(C, frame(0, 0, 1, b"\0\0\0\0\x03abc"), 11)
    _, msgs = h2.feed(
        S, frame(1, 0x4, 1, es.encode([(":status", "200"), ("grpc-status", "0")])), 15
    )
    assert types(msgs) == ["response_headers"] and msgs[0][1]["status"] == 200
    h2.feed(S, frame(0, 0, 1, b"\0" * 20), 20)
    flushed = h2.finish(50)
    (_, d) = flushed[0]
    assert d["incomplete"] and d["status"] == 200 and d["latency"] == 40
    assert d["body_size"] == 20 and d["request_body_size"] == 8
    assert d["request"]["target"] == "/pkg.S/Watch" and not h2.streams


def test_client_reset_is_an_event_and_server_headers_are_the_response():
    h2, ec, es = prior_knowledge()
    h2.feed(C, frame(1, 0x5, 1, ec.encode(req("/slow", "GET"))), 10)
    _, msgs = h2.feed(C, frame(3, 0, 1, struct.pack(">I", 8)), 20)
    assert types(msgs) == ["reset"]
    assert msgs[0][1]["reset_by"] == "client" and msgs[0][1]["reset"] == "CANCEL"
    _, msgs = h2.feed(S, frame(1, 0x5, 1, es.encode([(":status", "200")])), 30)
    (_, d) = msgs[0]
    assert d["type"] == "response" and d["status"] == 200 and d["latency"] == 20
    assert d["reset_by"] == "client" and d["request"]["target"] == "/slow"


def test_server_reset_ends_the_stream():
    h2, ec, es = prior_knowledge()
    h2.feed(C, frame(1, 0x5, 3, ec.encode(req("/x", "GET"))), 10)
    _, msgs = h2.feed(S, frame(3, 0, 3, struct.pack(">I", 7)), 12)
    assert types(msgs) == ["reset", "response"]
    d = msgs[1][1]
    assert d["reset"] == "REFUSED_STREAM" and d["reset_by"] == "server" and d["status"] is None
    assert not h2.streams


# -- gaps --------------------------------------------------------------------------------


def test_gap_inside_data_payload_is_passed_over():
    h2, ec, es = prior_knowledge()
    h2.feed(C, frame(1, 0x5, 1, ec.encode(req("/big", "GET"))), 1)
    h2.feed(S, frame(1, 0x4, 1, es.encode([(":status", "200")])), 2)
    data = frame(0, 0x1, 1, b"x" * 5000)
    h2.feed(S, data[:1000], 3)
    assert h2.gap(S, 2000, 4) == []
    _, msgs = h2.feed(S, data[3000:], 5)
    assert msgs[-1][1]["body_size"] == 5000 and not h2.errors


def test_gap_resynchronises_on_the_next_frame_header_and_forgets_hpack():
    h2, ec, es = prior_knowledge()
    h2.feed(C, frame(1, 0x5, 1, ec.encode(req("/one", "GET"))), 1)
    h2.gap(C, 700, 2)
    assert h2.errors.pop(0)[0] == "gap"
    # the rest of a lost frame, then a HEADERS of the next stream
    tail = b"\x17" * 50
    nxt = frame(1, 0x5, 3, ec.encode(req("/two", "GET", x_tag="t")))
    frames, msgs = h2.feed(C, tail + nxt, 3)
    assert [f["type"] for f in frames] == ["HEADERS"] and frames[0]["stream_id"] == 3
    (_, r) = msgs[0]
    assert r["method"] == "GET" and r["headers"]["x-tag"] == "t"
    assert h2.errors[0] == ("resync", "50 bytes skipped to the next frame header")


def test_frame_header_plausibility():
    ok = frame(4, 0, 0, b"\0\x03\0\0\0\x64")
    assert frame_end(ok, 0) == len(ok)
    assert frame_end(frame(4, 0, 1, b""), 0) < 0  # SETTINGS on a stream
    assert frame_end(frame(1, 0x4, 2, b"x"), 0, client=True) < 0  # client HEADERS on even id
    assert frame_end(frame(0, 0, 1, b"x" * 20000), 0) < 0  # over the max frame size
    assert frame_end(frame(12, 0, 1), 0) < 0  # unknown type
    assert find_h2_frame(b"junk" + ok + ok) == 4


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 5000), st.booleans())
def test_property_gaps_and_junk_never_raise(data, lost, mid):
    h2 = H2Connection(mid=mid)
    for i in range(0, len(data), 53):
        h2.feed(i % 2, data[i : i + 53], i)
        if i % 3 == 0:
            h2.gap(i % 2, lost, i)
    h2.finish(10_000)
