"""HTTP/1.x incremental parser: framing, pairing, errors, resynchronisation."""

from __future__ import annotations

from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from pcaptool.http.http1 import Http1Parser, looks_like_http

REQ_GET = b"GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nAccept: */*\r\n\r\n"
REQ_POST = b"POST /b HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world"
RESP_CL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nabcde"
RESP_CHUNKED = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n"
)


def pair():
    q: deque = deque()
    return Http1Parser(True, q), Http1Parser(False, q)


def feed_split(p: Http1Parser, data: bytes, cuts: list[int], ts: int = 0):
    out = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        if c <= prev:
            continue
        out += p.feed(data[prev:c], ts)
        prev = c
    return out


def test_request_and_response_basic_fields():
    c, s = pair()
    (req,) = c.feed(REQ_GET, 10)
    assert (req.method, req.target, req.version, req.host) == (
        "GET",
        "/a?x=1",
        "HTTP/1.1",
        "example.com",
    )
    assert req.headers["user-agent"] == "t/1"
    (resp,) = s.feed(RESP_CL, 50)
    d = resp.as_dict()
    assert d["status"] == 200 and d["reason"] == "OK"
    assert d["headers"]["x-a"] == "1, 2"  # repeated headers joined (RFC 9110 5.3)
    assert d["body_size"] == 5 and d["body_sample"] == "abcde"
    assert d["request"] == {"method": "GET", "target": "/a?x=1", "host": "example.com"}
    assert d["latency"] == 40


def test_every_split_point_gives_the_same_messages():
    for cut in range(1, len(REQ_POST)):
        c, _ = pair()
        msgs = feed_split(c, REQ_POST, [cut])
        assert len(msgs) == 1
        assert msgs[0].body_size == 11 and msgs[0].sample == b"hello world"
    for cut in range(1, len(RESP_CHUNKED)):
        c, s = pair()
        c.feed(REQ_GET, 0)
        msgs = feed_split(s, RESP_CHUNKED, [cut])
        assert len(msgs) == 1, cut
        m = msgs[0]
        assert m.chunked and m.body_size == 23 and m.sample == b"Wikipedia in\r\n\r\nchunks."
        assert m.headers["x-trailer"] == "t"


def test_byte_at_a_time():
    c, s = pair()
    data = REQ_GET + REQ_POST
    msgs = feed_split(c, data, list(range(1, len(data))))
    assert [m.method for m in msgs] == ["GET", "POST"]
    msgs = feed_split(s, RESP_CL + RESP_CHUNKED, list(range(1, len(RESP_CL + RESP_CHUNKED))))
    assert [(m.status, m.request.method) for m in msgs] == [(200, "GET"), (201, "POST")]


def test_pipelining_pairs_in_order():
    c, s = pair()
    reqs = c.feed(REQ_GET + REQ_POST + REQ_GET.replace(b"/a?x=1", b"/c"), 0)
    assert [r.target for r in reqs] == ["/a?x=1", "/b", "/c"]
    resps = s.feed(RESP_CL + RESP_CHUNKED + RESP_CL, 5)
    assert [r.request.target for r in resps] == ["/a?x=1", "/b", "/c"]
    assert not c.pending


def test_head_204_304_and_1xx_have_no_body():
    c, s = pair()
    c.feed(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n" + REQ_GET + REQ_GET, 0)
    resps = s.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"  # HEAD: length but no body
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
        1,
    )
    assert [r.status for r in resps] == [200, 100, 204, 304]
    assert [r.request.method for r in resps] == ["HEAD", "GET", "GET", "GET"]
    assert all(r.body_size == 0 for r in resps)


def test_response_without_length_runs_to_close():
    c, s = pair()
    c.feed(b"GET / HTTP/1.0\r\n\r\n", 0)
    assert s.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome", 1) == []
    assert s.feed(b" more", 2) == []
    (m,) = s.finish(3)
    assert m.body_size == 9 and m.end_ts == 3 and not m.errors


def test_garbage_prefix_is_reported_and_request_parsed():
    c, _ = pair()
    (m,) = c.feed(b"\x00\x01junk GET /txt HTTP/1.1\r\nHost: h\r\n\r\n", 0)
    assert m.method == "GET" and m.target == "/txt"
    assert m.errors[0][0] == "garbage_prefix"
    assert looks_like_http(b"abc GET /x HTTP/1.1\r\n") == "request"
    assert looks_like_http(b"GE") == "request"  # a first segment cut inside the method
    assert looks_like_http(b"\x16\x03\x01\x02\x00") is None


def test_bad_chunk_size_reports_and_resynchronises():
    c, s = pair()
    c.feed(REQ_GET + REQ_GET, 0)
    msgs = s.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" + RESP_CL, 1
    )
    assert msgs[0].errors[0][0] == "bad_chunk_size"
    assert msgs[-1].status == 200 and msgs[-1].body_size == 5
    # the rest of the broken body is skipped on the way to the next start line, and said so
    assert msgs[-1].errors == [("garbage_prefix", "10 bytes before the start line")]


def test_content_length_and_transfer_encoding_conflict():
    c, _ = pair()
    data = (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    msgs = c.feed(data, 0)
    assert [m.target for m in msgs] == ["/", "/smuggled"]  # chunked wins (RFC 9112 6.3)
    assert msgs[0].errors[0][0] == "cl_te_conflict"


def test_bad_content_length():
    c, _ = pair()
    msgs = c.feed(b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n" + REQ_GET, 0)
    assert msgs[0].errors[0][0] == "bad_content_length"
    assert msgs[-1].target == "/a?x=1"


def test_not_http_response_is_a_bad_start_line_when_its_line_completes():
    c, s = pair()
    c.feed(REQ_GET, 0)
    assert s.feed(b"SSH-2.0-OpenSSH_8.7\r\n", 1) == []
    assert s.errors == [("bad_start_line", "SSH-2.0-OpenSSH_8.7")]


def test_malformed_request_line_reported_at_once_and_next_request_found():
    c, s = pair()
    assert c.feed(b"GET /a b c\r\nHost: x\r\n\r\n", 0) == []
    assert c.errors[0] == ("bad_start_line", "GET /a b c")
    (m,) = c.feed(REQ_GET, 1)
    assert m.target == "/a?x=1"
    # the server's answer to the malformed request is not lost either
    (r,) = s.feed(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 2)
    assert r.status == 400


def test_long_junk_is_reported_and_the_scan_goes_on():
    c, _ = pair()
    junk = bytes(range(256)).replace(b"\n", b"") * 300  # no start line, no newline
    out = []
    for i in range(0, len(junk), 1000):
        out += c.feed(junk[i : i + 1000], 0)
    assert c.errors and c.errors[0][0] == "not_http"
    (m,) = c.feed(b"\r\n" + REQ_GET, 1)
    assert m.target == "/a?x=1" and len(c.buf) <= 64


def test_every_error_of_a_message_is_kept():
    c, _ = pair()
    (m,) = c.feed(
        b"\x00\x01" + REQ_POST.replace(b"Content-Length: 11", b"Content-Length: 11\r\nbad"), 0
    )
    d = m.as_dict()
    assert d["error"]["code"] == "garbage_prefix"
    assert [e["code"] for e in d["errors"]] == ["garbage_prefix", "bad_header"]


def test_gap_inside_body_of_known_length_keeps_the_message():
    c, s = pair()
    c.feed(REQ_GET, 0)
    s.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", 1)
    assert s.gap(5, 2) == []
    (m,) = s.feed(b"cde", 3)
    assert m.body_size == 10 and m.gap == 5 and not m.errors


def test_gap_in_headers_resynchronises_on_next_message():
    c, s = pair()
    c.feed(REQ_GET + REQ_GET, 0)
    s.feed(b"HTTP/1.1 200 OK\r\nCont", 1)
    s.gap(7, 2)
    (m,) = s.feed(b"ent: x\r\n\r\n" + RESP_CL, 3)
    assert m.status == 200 and m.body_size == 5


def test_upgrade_websocket_and_h2c_and_connect():
    c, s = pair()
    c.feed(b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0)
    (m,) = s.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello", 1)
    assert m.status == 101 and s.switched == "tunnel"
    assert s.feed(b"\x81\x05hello", 2) == []

    c, s = pair()
    c.feed(
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", 0
    )
    s.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        1,
    )
    assert s.switched == "h2" and s.leftover.startswith(b"\x00\x00\x00\x04")
    c.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 2)
    assert c.switched == "h2" and c.leftover.startswith(b"PRI")

    c, s = pair()
    c.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01", 0)
    assert c.switched == "tunnel"
    (m,) = s.feed(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03", 1)
    assert s.switched == "tunnel" and m.request.method == "CONNECT"


def test_incomplete_message_at_end_of_stream():
    c, _ = pair()
    c.feed(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc", 0)
    (m,) = c.finish(1)
    assert m.errors[0][0] == "incomplete"


def test_headers_too_large():
    c, _ = pair()
    c.header_limit = 1000
    c.feed(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 2000, 0)
    assert c.errors[0][0] == "headers_too_large"
    (m,) = c.feed(b"\r\n\r\n" + REQ_GET, 1)
    assert m.target == "/a?x=1"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 400), max_size=6), st.booleans())
def test_property_never_raises_on_any_bytes(data, cuts, is_request):
    p = Http1Parser(is_request, deque([]))
    feed_split(p, data, cuts)
    p.gap(3, 1)
    p.feed(data[:50], 2)
    p.finish(3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=8))
def test_property_any_split_of_valid_traffic_parses_the_same(cuts):
    c, s = pair()
    reqs = feed_split(c, REQ_GET + REQ_POST + REQ_GET, cuts)
    resps = feed_split(s, RESP_CHUNKED + RESP_CL + RESP_CHUNKED, cuts)
    assert [r.method for r in reqs] == ["GET", "POST", "GET"]
    assert [(r.status, r.body_size) for r in resps] == [(201, 23), (200, 5), (201, 23)]


def test_gap_inside_headers_keeps_the_lines_before_the_cut():
    c, s = pair()
    c.feed(REQ_GET, 0)
    assert s.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Cut: abc", 1) == []
    (m,) = s.gap(1168, 2)
    assert m.status == 200 and m.headers == {"content-type": "text/html"}
    assert m.request.target == "/a?x=1" and m.errors[-1][0] == "gap"
    (m2,) = s.feed(b"junk\r\n" + RESP_CL, 3)  # and the next response is found
    assert m2.status == 200 and m2.body_size == 5


def test_http09_simple_request_and_response():
    """RFC 1945: `GET /x` with no version is a Simple-Request; its answer, a body with no
    status line, runs to the close. Only GET has a simple form."""
    c, s = pair()
    (req,) = feed_split(c, b"GET /old/page.html\r\n", [3, 9])
    assert (req.method, req.target, req.version, req.headers) == (
        "GET",
        "/old/page.html",
        "HTTP/0.9",
        {},
    )
    assert s.feed(b"<html>no status line", 5) == [] and s.feed(b" here</html>", 6) == []
    (resp,) = s.finish(9)
    assert resp.version == "HTTP/0.9" and resp.status is None and resp.request is req
    assert resp.body_size == len(b"<html>no status line here</html>") and not resp.errors
    # the same two-token line with another method is no request at all
    c, s = pair()
    assert c.feed(b"POST /x\r\n", 0) == [] and c.errors == [("bad_start_line", "POST /x")]
    # a simple request among HTTP/1.x ones: the server answers each as asked
    c, s = pair()
    assert len(c.feed(REQ_GET + b"GET /\r\n", 0)) == 2
    (r1,) = s.feed(RESP_CL, 1)
    assert r1.status == 200 and s.feed(b"body of the 0.9 answer", 2) == []
    (r2,) = s.finish(3)
    assert r2.version == "HTTP/0.9" and r2.request.target == "/"
