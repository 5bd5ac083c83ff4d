"""`translate` on captures built here: detection that re-synchronises after junk, malformed
request lines, unpaired responses, CONNECT tunnels carrying HTTP, h2c and TLS, HTTP/2
resets, gaps and streams open at the end, and a ClientHello split over segments."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import hpack
import jsonschema
import orjson
import pytest
from tcpconv import Capture, Conn
from test_tlshello import client_hello, records

from conftest import REPO, run_pcaptool
from pcaptool.http.http2 import PREFACE

SCHEMA = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
GET = b"GET /a HTTP/1.1\r\nHost: svc\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def translate(cap: Capture, tmp_path: Path) -> list[dict]:
    path = cap.write(tmp_path / "c.pcap")
    r = run_pcaptool("translate", str(path))
    assert r.returncode == 0 and not r.stderr, r.stderr
    recs = [orjson.loads(x) for x in r.stdout.splitlines()]
    for rec in recs:
        errs = [e.message for e in VALIDATOR.iter_errors(rec)]
        assert not errs, errs
    return recs


def by_num(recs: list[dict]) -> dict[int, dict]:
    return {r["pcap"]["num"]: r for r in recs if "pcap" in r}


def msgs(rec: dict) -> list[dict]:
    h = rec.get("http")
    return [h, *h.get("more", [])] if h else []


def h2frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([ftype, flags])
    return head + struct.pack(">I", sid) + payload


@pytest.mark.parametrize(
    "first",
    [b"\x00", b"220 proxy ready\r\n", b"\x04\x01\x00\x50\x0a\x00\x00\x09user\x00"],
    ids=["keepalive-byte", "banner", "socks4"],
)
def test_junk_first_does_not_disable_analysis(tmp_path, first):
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    c.client(first)
    if first.startswith(b"\x04"):
        c.server(b"\x00\x5a\x00\x50\x0a\x00\x00\x09")
    req = c.client(GET)
    resp = c.server(OK)
    c.close()
    recs = by_num(translate(cap, tmp_path))
    (m,) = msgs(recs[req])
    assert m["method"] == "GET" and m["error"]["code"] == "garbage_prefix"
    assert msgs(recs[resp])[0]["status"] == 200 and recs[resp]["httpRequest"]["status"] == 200


def test_malformed_request_line_reported_where_it_completes_and_responses_kept(tmp_path):
    cap = Capture()
    c = Conn(cap)
    c.handshake()
    bad = c.client(b"GET /a b c\r\nHost: svc\r\n\r\n")
    resp = c.server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    c.client(GET)
    ok = c.server(OK)
    c.close()
    recs = by_num(translate(cap, tmp_path))
    assert recs[bad]["http"]["error"]["code"] == "bad_start_line"
    assert (
        recs[resp]["http"]["status"] == 400 and recs[resp]["httpRequest"]["requestMethod"] is None
    )
    assert recs[ok]["http"]["request"]["target"] == "/a"


def test_unpaired_response_gets_an_http_request(tmp_path):
    cap = Capture()
    c = Conn(cap)
    c.server(OK)  # the capture starts after the request
    recs = by_num(translate(cap, tmp_path))
    h = recs[1]["httpRequest"]
    assert h["status"] == 200 and h["requestMethod"] is None and h["protocol"] == "HTTP/1.1"
    assert h["remoteIp"] == "10.0.0.1" and h["serverIp"] == "10.0.0.9"


def connect(c: Conn, target: bytes = b"inner:443") -> int:
    c.handshake()
    n = c.client(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    c.server(b"HTTP/1.1 200 Connection established\r\n\r\n")
    return n


def test_connect_tunnel_carrying_http(tmp_path):
    cap = Capture()
    c = Conn(cap)
    num = connect(c, b"inner:80")
    req = c.client(GET)
    resp = c.server(OK)
    c.close()
    recs = by_num(translate(cap, tmp_path))
    assert recs[req]["http"]["target"] == "/a"
    assert recs[req]["http"]["tunnel"] == {"num": num, "target": "inner:80"}
    assert recs[resp]["http"]["request"]["target"] == "/a"


def test_connect_tunnel_carrying_h2c(tmp_path):
    cap = Capture()
    c = Conn(cap)
    connect(c)
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    block = enc_c.encode([(":method", "POST"), (":scheme", "http"), (":path", "/pkg.S/M")])
    req = c.client(PREFACE + h2frame(4, 0, 0) + h2frame(1, 0x5, 1, block))
    resp = c.server(h2frame(4, 0, 0) + h2frame(1, 0x5, 1, enc_s.encode([(":status", "200")])))
    c.close()
    recs = by_num(translate(cap, tmp_path))
    assert recs[req]["http"]["target"] == "/pkg.S/M" and recs[req]["http"]["tunnel"]
    assert recs[resp]["http"]["status"] == 200 and recs[resp]["httpRequest"]["protocol"] == "HTTP/2"


def test_connect_tunnel_carrying_tls_and_refused_connect_goes_on(tmp_path):
    cap = Capture()
    c = Conn(cap)
    num = connect(c)
    hello = c.client(records(client_hello(sni="inner.example"), 4000))
    c.close()
    cap2 = Capture()
    d = Conn(cap2)
    d.handshake()
    d.client(b"CONNECT x:443 HTTP/1.1\r\n\r\n")
    d.server(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    again = d.client(GET)
    d.close()
    recs = by_num(translate(cap, tmp_path))
    tls = recs[hello]["tls"]
    assert tls["sni"] == "inner.example" and tls["tunnel"]["num"] == num
    recs = by_num(translate(cap2, tmp_path))
    assert recs[again]["http"]["target"] == "/a"


def h2_conn(cap: Capture) -> tuple[Conn, hpack.Encoder, hpack.Encoder]:
    c = Conn(cap)
    c.handshake()
    c.client(PREFACE + h2frame(4, 0, 0))
    c.server(h2frame(4, 0, 0))
    return c, hpack.Encoder(), hpack.Encoder()


def test_client_reset_then_server_response_keeps_client_as_remote_ip(tmp_path):
    cap = Capture()
    c, ec, es = h2_conn(cap)
    c.client(h2frame(1, 0x5, 1, ec.encode([(":method", "GET"), (":path", "/slow")])))
    rst = c.client(h2frame(3, 0, 1, struct.pack(">I", 8)))
    resp = c.server(h2frame(1, 0x5, 1, es.encode([(":status", "200")])))
    c.close()
    recs = by_num(translate(cap, tmp_path))
    r = recs[rst]["http"]
    assert r["type"] == "reset" and r["reset_by"] == "client" and "httpRequest" not in recs[rst]
    h = recs[resp]["httpRequest"]
    assert h["status"] == 200 and h["remoteIp"] == "10.0.0.1" and h["serverIp"] == "10.0.0.9"


def test_open_stream_reported_on_headers_and_flushed_at_end_of_input(tmp_path):
    cap = Capture()
    c, ec, es = h2_conn(cap)
    c.client(h2frame(1, 0x4, 1, ec.encode([(":method", "POST"), (":path", "/pkg.S/Watch")])))
    hdr = c.server(h2frame(1, 0x4, 1, es.encode([(":status", "200")])))
    c.server(h2frame(0, 0, 1, b"\0" * 12))
    out = translate(cap, tmp_path)
    recs = by_num(out)
    assert recs[hdr]["http"]["type"] == "response_headers" and recs[hdr]["http"]["status"] == 200
    (end,) = [r for r in out if "pcap" not in r]
    assert end["http"]["incomplete"] and end["http"]["status"] == 200
    assert end["http"]["body_size"] == 12 and end["httpRequest"]["remoteIp"] == "10.0.0.1"
    assert end["message"].startswith("end of input HTTP/2 200 incomplete")


def test_h2_gap_resynchronises_and_errors_are_on_the_packets(tmp_path):
    cap = Capture()
    c, ec, es = h2_conn(cap)
    c.client(h2frame(1, 0x5, 1, ec.encode([(":method", "GET"), (":path", "/1")])))
    lost = h2frame(1, 0x5, 3, ec.encode([(":method", "GET"), (":path", "/2", True)]))
    c.cseq += len(lost)  # never captured
    after = c.client(h2frame(1, 0x5, 5, ec.encode([(":method", "GET"), (":path", "/3")])))
    ack = c.server_ack()
    c.close()
    recs = by_num(translate(cap, tmp_path))
    rec = recs[ack] if "gap" in recs[ack].get("tcp", {}) else recs[after]
    assert rec["tcp"]["gap"]["bytes"] == len(lost)
    codes = [e["code"] for m in msgs(rec) for e in m.get("errors", [])]
    assert "gap" in codes
    got = [m for r in recs.values() for m in msgs(r) if m["type"] == "request"]
    assert [m["target"] for m in got] == ["/1", "/3"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_split_client_hello_sni_on_the_completing_packet_like_tshark(tmp_path):
    cap = Capture()
    c = Conn(cap, server=("10.0.0.9", 443))
    c.handshake()
    stream = records(client_hello(sni="split.example", pad=2500), 1200)
    nums = [c.client(stream[i : i + 1000]) for i in range(0, len(stream), 1000)]
    c.server_ack()
    c.close()
    recs = by_num(translate(cap, tmp_path))
    mine = {n: r["tls"]["sni"] for n, r in recs.items() if r.get("tls", {}).get("sni")}
    path = tmp_path / "c.pcap"
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e",
         "tls.handshake.extensions_server_name", "-Y", "tls.handshake.type == 1"],
        capture_output=True, check=True, text=True,
    ).stdout.split()  # fmt: skip
    assert mine == {int(out[0]): out[1]} and int(out[0]) in nums
    assert recs[int(out[0])]["tls"]["reassembled"] is True
