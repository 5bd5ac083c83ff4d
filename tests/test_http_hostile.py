"""What strangers send cannot crash, bloat or leak through translate's HTTP analysis
(issue 11): every capture is built here."""

from __future__ import annotations

import random
import time
from collections import deque
from pathlib import Path

import hpack
import orjson
import pytest
from hostile import HOSTILE, SECRET, h2_conn, h2_frame, send
from tcpconv import Capture, Conn

from conftest import corpus_files, run_pcaptool
from pcaptool.capfile.reader import CaptureReader, open_input
from pcaptool.errors import CaptureFormatError
from pcaptool.http.http1 import Http1Parser
from pcaptool.http.records import _redact_url, redact_url, request_url
from pcaptool.record.ndjson import MAX_RECORD_BYTES, encode
from pcaptool.tcp.analyzer import HttpAnalyzer
from pcaptool.translate.serial import Translator

SUP2 = "\u00b2".encode()  # superscript two: a digit to str.isdigit(), not to the wire


def run(path: Path, *args: str) -> tuple[list[dict], bytes]:
    r = run_pcaptool("translate", *args, str(path))
    assert r.returncode == 0 and b"worker ended" not in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr
    return [orjson.loads(x) for x in r.stdout.splitlines()], r.stdout


def http_msgs(recs: list[dict]) -> list[dict]:
    out = []
    for r in recs:
        h = r.get("http")
        if h:
            out += [h, *h.get("more", ())]
    return out


def errors(recs: list[dict]) -> list[str]:
    return [m["error"]["code"] for m in http_msgs(recs) if "error" in m]


def one_exchange(tmp_path: Path, request: bytes, response: bytes = b"") -> Path:
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    c.client(request)
    if response:
        c.server(response)
    c.close()
    return cap.write(tmp_path / "x.pcap")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_non_ascii_content_length_is_an_http_error(tmp_path, workers):
    req = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + SUP2 + b"\r\n\r\nab"
    recs, _ = run(one_exchange(tmp_path, req, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                  "--workers", workers)  # fmt: skip
    assert "bad_content_length" in errors(recs)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_http2_non_ascii_status_and_grpc_status(tmp_path, workers):
    cap = Capture()
    c = h2_conn(cap)
    req = hpack.Encoder().encode([(":method", "POST"), (":path", "/s/M"), (":scheme", "http")])
    c.client(h2_frame(1, 0x5, 1, req))
    enc = hpack.Encoder()
    c.server(h2_frame(1, 0x4, 1, enc.encode([(":status", "\u00b2\u00b2\u00b2")])))
    c.server(h2_frame(1, 0x5, 1, enc.encode([("grpc-status", "\u00b9")])))
    recs, _ = run(cap.write(tmp_path / "h2.pcap"), "--workers", workers)
    (resp,) = [m for m in http_msgs(recs) if m.get("type") == "response"]
    assert resp["status"] is None and resp["grpc_status"] == "\u00b9"


def test_bare_lf_is_flagged_and_never_swallows_the_next_header(tmp_path):
    req = b"POST / HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
    recs, _ = run(one_exchange(tmp_path, req))
    reqs = [m for m in http_msgs(recs) if m.get("type") == "request"]
    assert [(m["method"], m["target"]) for m in reqs] == [("POST", "/"), ("GET", "/two")]
    assert reqs[0]["headers"]["content-length"] == "5" and reqs[0]["body_size"] == 5
    assert reqs[0]["error"]["code"] == "bare_lf"


def test_xchunked_is_not_chunked():
    c, s = Http1Parser(True, deque()), None
    c.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", 0)
    (m,) = c.finish(1) or [None]
    assert m is None or not m.chunked
    q: deque = deque()
    c, s = Http1Parser(True, q), Http1Parser(False, q)
    c.feed(b"GET / HTTP/1.1\r\n\r\n", 0)
    s.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1)
    (m,) = s.finish(2)
    assert not m.chunked and m.body_size == len(b"5\r\nhello\r\n0\r\n\r\n")


def test_unterminated_headers_bounded_and_one_piece_header_obeys_the_limit(tmp_path):
    p = Http1Parser(True, deque())
    for _ in range(20):
        p.feed(b"GET / HTTP/1.1\r\n" if not p.buf else b"X-Pad: " + b"a" * 1000 + b"\r\n", 0)
        assert len(p.buf) <= 8 * 1024 + 1100
    big = HOSTILE["h1_huge_header_at_once"][0](tmp_path / "big.pcap", 1_000_000)
    recs, out = run(big)
    assert "headers_too_large" in errors(recs)
    assert max(len(x) for x in out.splitlines()) < 4096


def test_repeated_headers_join_in_linear_time():
    def parse(n: int) -> float:
        p = Http1Parser(True, deque(), header_limit=1 << 30)
        data = b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * n + b"\r\n"
        t = time.perf_counter()
        (m,) = p.feed(data, 0)
        assert m.headers["x"].count("a") == n
        return time.perf_counter() - t

    parse(1000)
    small, large = parse(20_000), parse(160_000)
    assert large < 30 * small + 0.05  # 8x the headers; quadratic would be 64x


def test_first_data_segment_out_of_order_is_still_analysed(tmp_path):
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    req = b"GET /late HTTP/1.1\r\nHost: h\r\n\r\n"
    base = c.cseq
    c.raw(True, base + 10, req[10:])
    c.raw(True, base, req[:10])
    c.cseq = base + len(req)
    c.server(b"HTTP/1.1 204 No Content\r\n\r\n")
    c.close()
    recs, _ = run(cap.write(tmp_path / "ooo.pcap"))
    kinds = [(m["type"], m.get("target") or m.get("status")) for m in http_msgs(recs)]
    assert kinds == [("request", "/late"), ("response", 204)]


def test_http2_caps_are_each_an_http_error(tmp_path):
    flood = HOSTILE["h2_continuation_flood"][0](tmp_path / "f.pcap", 20_000)
    assert "header_block_too_large" in errors(run(flood)[0])
    table = HOSTILE["h2_table_growth"][0](tmp_path / "t.pcap", 50)
    errs = errors(run(table)[0])
    assert "table_size_capped" in errs and "hpack_error" in errs
    cap = Capture()
    c = h2_conn(cap)
    enc = hpack.Encoder()
    send(c, True, b"".join(
        h2_frame(1, 0x4, 2 * k + 1, enc.encode([(":method", "GET"), (":path", f"/{k}")]))
        for k in range(300)
    ))  # fmt: skip
    assert "too_many_streams" in errors(run(cap.write(tmp_path / "s.pcap"))[0])


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_no_record_exceeds_the_bound(tmp_path, name):
    build, small, _ = HOSTILE[name]
    _, out = run(build(tmp_path / "h.pcap", small), "--flows")
    assert max(len(x) + 1 for x in out.splitlines()) <= MAX_RECORD_BYTES


def test_a_record_too_long_is_cut_and_says_what_went():
    rec = {"message": "m" * 5000, "http": {"type": "request", "headers": {"x": "y" * 70_000}}}
    line = encode(rec)
    assert len(line) <= MAX_RECORD_BYTES
    got = orjson.loads(line)
    assert got["cut"]["bytes"] > MAX_RECORD_BYTES and "http.headers" in got["cut"]["keys"]


def secrets_capture(tmp_path: Path) -> Path:
    """Credentials everywhere a client or server can put them."""
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    c.client(
        f"GET http://user:{SECRET}@h/p?access_token={SECRET}&KEY={SECRET}&x=1 HTTP/1.1\r\n"
        f"Host: h\r\nAUTHORIZATION: Bearer {SECRET}\r\nReferer: http://h/?sig={SECRET}\r\n"
        f"Authorization : Basic {SECRET}\r\n\r\n".encode()
    )
    c.server(f"HTTP/1.1 200 OK\r\nSet-Cookie: s={SECRET}\r\nContent-Length: 0\r\n\r\n".encode())
    body = f"user=a&password={SECRET}".encode()
    c.client(
        b"POST /login HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    body = f'{{"token": "{SECRET}"}}'.encode()
    c.server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             + f"{len(body):x}\r\n".encode() + body + f"\r\n0\r\nCookie: {SECRET}\r\n\r\n".encode())  # fmt: skip
    c.close()
    h2 = h2_conn(cap, port=8081)
    hdrs = [(":method", "GET"), (":path", f"/x?token={SECRET}"), (":scheme", "http"),
            (":authority", "h"), ("Authorization", f"Basic {SECRET}")]  # fmt: skip
    h2.client(h2_frame(1, 0x5, 1, hpack.Encoder().encode(hdrs)))
    resp = [(":status", "200"), ("Set-Cookie", f"a={SECRET}")]
    h2.server(h2_frame(1, 0x5, 1, hpack.Encoder().encode(resp)))
    return cap.write(tmp_path / "secrets.pcap")


def test_planted_secrets_never_reach_a_record(tmp_path):
    path = secrets_capture(tmp_path)
    for workers in ("1", "2"):
        recs, out = run(path, "--flows", "--workers", workers)
        assert SECRET.encode() not in out
        assert len(http_msgs(recs)) >= 6  # the messages are there, the secrets are not
    for name, (build, small, _) in HOSTILE.items():
        _, out = run(build(tmp_path / f"{name}.pcap", small))
        assert SECRET.encode() not in out


def test_credentials_of_the_corpus_never_reach_a_record():
    """Every header value redacted by default and every credential query value found in the
    raw bytes of a corpus capture is absent from its records."""
    import re

    header = re.compile(
        rb"(?im)^(?:authorization|proxy-authorization|cookie|set-cookie)\s*:\s*([^\r\n]{8,})"
    )
    query = re.compile(rb"(?i)[?&](?:access_token|token|key|sig|password|api_key)=([^&\s#\"']{8,})")
    files = corpus_files()
    if not files:
        pytest.skip("no corpus")
    checked = 0
    for f in files:
        raw = f.read_bytes()
        found = {m.group(1) for rx in (header, query) for m in rx.finditer(raw)}
        if not found:
            continue
        out = bytearray()
        try:
            with open_input(str(f)) as stream:
                for rec in Translator(f.name, HttpAnalyzer(flows=True)).records(
                    CaptureReader(stream, f.name)
                ):
                    out += encode(rec)
        except CaptureFormatError:
            pass
        for value in found:
            text = value.decode("latin-1")
            assert orjson.dumps(text)[1:-1] not in out, (f.name, text[:40])
        checked += 1
    assert checked >= 1


def held_after(path: Path) -> tuple[int, int, int]:
    """(HTTP bytes, TCP bytes, TCP segments) still charged to the budgets after a whole translation."""
    an = HttpAnalyzer(flows=True)
    with open_input(str(path)) as stream:
        try:
            for _ in Translator(path.name, an).records(CaptureReader(stream, path.name)):
                pass
        except CaptureFormatError:
            an.finish()
    tcp = an.tracker.table.budget
    return an.http_streams.budget.held, tcp.held, tcp.segments


def test_budgets_account_every_byte(tmp_path):
    """Everything charged is given back once every connection ended: no leak that would
    refuse analysis later in a long capture."""
    paths = [secrets_capture(tmp_path)]
    for name, (build, small, _) in HOSTILE.items():
        paths.append(build(tmp_path / f"{name}.pcap", small))
    paths += [f for f in corpus_files() if "http" in f.name.lower()]
    for p in paths:
        assert held_after(p) == (0, 0, 0), p.name


def test_http_memory_cap_stops_one_connection_and_says_so(tmp_path):
    from pcaptool.http.budget import Budget

    path = HOSTILE["h2_many_streams"][0](tmp_path / "s.pcap", 200)
    an = HttpAnalyzer()
    an.http_streams.budget = Budget(limit=600)
    with open_input(str(path)) as stream:
        recs = list(Translator("s", an).records(CaptureReader(stream, "s")))
    assert "memory_cap" in errors(recs)
    assert not [m for m in http_msgs(recs) if m["type"] == "response"]  # analysis stopped
    assert an.http_streams.budget.held == 0


def test_request_url_and_remembered_answers_agree_with_redact_url_of_the_whole_url():
    # requestUrl is built from the target's redaction when the host cannot take part in a
    # match, and redact_url remembers recent answers: both must give what one redaction of
    # the whole text gives, on hosts and targets made of the characters matches are made of
    rnd = random.Random(11)
    alphabet = ["/", "?", "&", ";", "=", "@", "#", " ", ":", "a", "K", "ſ", "é", "%"]
    words = ["key", "token", "sig", "code", "x-amz-signature", "user", "pw", "//", "q"]
    pieces = alphabet + words

    def text(n: int) -> str:
        return "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, n)))

    for _ in range(4000):
        host, target = text(4), text(10)
        if rnd.random() < 0.5:
            target = "/" + target
        whole = f"http://{host}{target}"
        assert request_url(host, target) == _redact_url(whole), (host, target)
        assert redact_url(target) == _redact_url(target) == redact_url(target), target
