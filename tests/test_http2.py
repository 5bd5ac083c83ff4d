"""HTTP/2 frames, HPACK with the dynamic table, CONTINUATION, pairing, gRPC, errors."""

from __future__ import annotations

import struct

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.http.http2 import PREFACE, H2Connection, looks_like_frames

C, S = 0, 1  # directions: client, server


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([ftype, flags])
        + struct.pack(">I", sid)
        + payload
    )


def settings_frame(**kv) -> bytes:
    ids = {"HEADER_TABLE_SIZE": 1, "MAX_CONCURRENT_STREAMS": 3, "INITIAL_WINDOW_SIZE": 4}
    return frame(4, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in kv.items()))


def request_headers(path: str, **extra) -> list[tuple[str, str]]:
    h = [(":method", "GET"), (":scheme", "http"), (":authority", "svc.local"), (":path", path)]
    return h + [(k.replace("_", "-"), v) for k, v in extra.items()]


def feed_all(h2: H2Connection, d: int, data: bytes, ts: int = 0, cut: int | None = None):
    frames, msgs = [], []
    parts = [data] if cut is None else [data[:cut], data[cut:]]
    for p in parts:
        f, m = h2.feed(d, p, ts)
        frames += f
        msgs += m
    return frames, msgs


def test_prior_knowledge_exchange_with_dynamic_table_and_grpc_trailers():
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    h2 = H2Connection()
    h2.expect_preface(C)
    client = PREFACE + settings_frame(MAX_CONCURRENT_STREAMS=100)
    client += frame(1, 0x4, 1, enc_c.encode(request_headers("/pkg.Svc/A", user_agent="grpc-test")))
    client += frame(0, 0x1, 1, b"\x00\x00\x00\x00\x02hi")
    frames, msgs = feed_all(h2, C, client, 10)
    assert [f["type"] for f in frames] == ["PREFACE", "SETTINGS", "HEADERS", "DATA"]
    assert frames[1]["settings"] == {"MAX_CONCURRENT_STREAMS": 100}
    assert msgs[0][1]["method"] == "GET" and msgs[0][1]["target"] == "/pkg.Svc/A"

    # the second request re-uses the dynamic table entries the first one added
    block2 = enc_c.encode(request_headers("/pkg.Svc/A", user_agent="grpc-test"))
    assert len(block2) < 10
    frames, msgs = feed_all(h2, C, frame(1, 0x5, 3, block2), 11)
    assert msgs[0][1]["headers"]["user-agent"] == "grpc-test"
    assert msgs[0][1]["stream_id"] == 3

    server = settings_frame(HEADER_TABLE_SIZE=4096)
    server += frame(
        1, 0x4, 1, enc_s.encode([(":status", "200"), ("content-type", "application/grpc")])
    )
    server += frame(0, 0, 1, b"\x00\x00\x00\x00\x01x")
    server += frame(1, 0x5, 1, enc_s.encode([("grpc-status", "5"), ("grpc-message", "not found")]))
    frames, msgs = feed_all(h2, S, server, 30)
    assert [d["type"] for _, d in msgs] == ["response_headers", "response"]
    assert msgs[0][1]["status"] == 200 and msgs[0][1]["latency"] == 20
    (_, d) = msgs[1]
    assert d["status"] == 200 and d["grpc_status"] == 5 and d["grpc_message"] == "not found"
    assert d["latency"] == 20 and d["body_size"] == 6
    assert d["request"]["target"] == "/pkg.Svc/A"


def test_continuation_frames_are_joined_and_padding_and_priority_skipped():
    enc = hpack.Encoder()
    block = enc.encode(request_headers("/long", x_big="v" * 300))
    h2 = H2Connection()
    h2.expect_preface(C)
    # HEADERS with PADDED|PRIORITY, then two CONTINUATIONs
    first = bytes([4]) + struct.pack(">IB", 0x80000000 | 0, 15) + block[:100] + b"\0" * 4
    data = PREFACE + frame(1, 0x8 | 0x20, 1, first)
    data += frame(9, 0, 1, block[100:200]) + frame(9, 0x4, 1, block[200:])
    for cut in (None, 30, 60, 150, len(data) - 3):
        h2 = H2Connection()
        h2.expect_preface(C)
        frames, msgs = feed_all(h2, C, data, 0, cut)
        assert [f["type"] for f in frames] == ["PREFACE", "HEADERS", "CONTINUATION", "CONTINUATION"]
        assert msgs[0][1]["headers"]["x-big"] == "v" * 300
        assert frames[3]["headers"][3] == [":path", "/long"]


def test_every_frame_type_decoded():
    enc = hpack.Encoder()
    h2 = H2Connection()
    h2.expect_preface(C)
    data = PREFACE + frame(1, 0x4, 1, enc.encode(request_headers("/")))
    data += frame(2, 0, 3, struct.pack(">IB", 0x80000001, 31))
    data += frame(6, 0, 0, b"12345678") + frame(6, 1, 0, b"12345678")
    data += frame(8, 0, 0, struct.pack(">I", 65535))
    data += frame(3, 0, 1, struct.pack(">I", 8))
    data += frame(7, 0, 0, struct.pack(">II", 1, 11) + b"calm down")
    frames, msgs = feed_all(h2, C, data)
    by = {f["type"]: f for f in frames}
    assert by["PRIORITY"] == {
        "type": "PRIORITY", "stream_id": 3, "length": 5, "flags": 0,
        "dependency": 1, "exclusive": True, "weight": 32,
    }  # fmt: skip
    assert by["PING"]["opaque"] == b"12345678".hex()
    assert by["WINDOW_UPDATE"]["increment"] == 65535
    assert by["RST_STREAM"]["error"] == "CANCEL"
    assert by["GOAWAY"]["error"] == "ENHANCE_YOUR_CALM" and by["GOAWAY"]["last_stream_id"] == 1
    assert by["GOAWAY"]["debug"] == "calm down"
    # the client's reset is an event on the stream, not its response
    reset = [d for _, d in msgs if d["type"] == "reset"]
    assert reset[0]["reset"] == "CANCEL" and reset[0]["reset_by"] == "client"
    assert not [d for _, d in msgs if d["type"] == "response"] and 1 in h2.streams

    enc_s = hpack.Encoder()
    pp = struct.pack(">I", 2) + enc_s.encode(request_headers("/pushed"))
    frames, _ = feed_all(h2, S, frame(5, 0x4, 1, pp))
    assert frames[0]["type"] == "PUSH_PROMISE" and frames[0]["promised_stream_id"] == 2
    assert h2.streams[2].req[":path"] == "/pushed"


def test_large_data_frame_is_passed_over_not_buffered():
    enc = hpack.Encoder()
    h2 = H2Connection()
    h2.expect_preface(C)
    feed_all(h2, C, PREFACE + frame(1, 0x5, 1, enc.encode(request_headers("/big"))))
    enc_s = hpack.Encoder()
    body = b"x" * 100_000
    data = frame(1, 0x4, 1, enc_s.encode([(":status", "200")])) + frame(0, 0x1, 1, body)
    got = []
    for i in range(0, len(data), 1400):
        f, m = h2.feed(S, data[i : i + 1400], i)
        got += m
        assert len(h2.dirs[S].buf) < 1400 + 9
    assert got[-1][1]["body_size"] == 100_000 and got[-1][1]["status"] == 200


def test_hpack_error_is_reported_not_raised():
    h2 = H2Connection()
    h2.expect_preface(C)
    frames, _ = feed_all(h2, C, PREFACE + frame(1, 0x4, 1, b"\xff\xff\xff\xff\x7f"))
    assert frames[1]["error"].startswith("hpack")
    assert h2.errors[0][0] == "hpack_error"


def test_bad_preface_reported():
    h2 = H2Connection()
    h2.expect_preface(C)
    h2.feed(C, b"PRX * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0), 0)
    assert h2.errors[0][0] == "bad_preface"


def test_midstream_detection():
    enc = hpack.Encoder()
    good = frame(4, 0, 0) + frame(1, 0x5, 1, enc.encode(request_headers("/")))
    assert looks_like_frames(good)
    assert not looks_like_frames(b"GET / HTTP/1.1\r\n\r\n")
    assert not looks_like_frames(good[:-1])


def test_upgraded_stream_one_pairs_with_http1_request():
    h2 = H2Connection()
    h2.upgraded(C, {":method": "GET", ":path": "/robots.txt", ":authority": "h"}, 5, None)
    enc = hpack.Encoder()
    _, msgs = feed_all(
        h2, S, settings_frame() + frame(1, 0x5, 1, enc.encode([(":status", "404")])), 9
    )
    assert msgs[0][1]["status"] == 404 and msgs[0][1]["request"]["target"] == "/robots.txt"
    assert msgs[0][1]["latency"] == 4


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_property_never_raises_on_any_bytes(data, preface):
    h2 = H2Connection()
    if preface:
        h2.expect_preface(C)
        data = PREFACE + data
    for i in range(0, len(data), 37):
        h2.feed(C, data[i : i + 37], i)
        h2.feed(S, data[i : i + 37], i)
