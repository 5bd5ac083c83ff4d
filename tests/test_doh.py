"""DNS over HTTPS (RFC 8484) in HTTP/2: `application/dns-message` bodies are decoded as DNS
on the packet that ends them, as tshark does; bounded and charged to the budget. Every
case builds its own conversation."""

from __future__ import annotations

import subprocess
import sys

import dns.message
import dns.rrset
import hpack
import orjson
from tcpconv import Capture, Conn
from test_http2_resilience import C, frame, prior_knowledge, req

from pcaptool.http.http2 import PREFACE

DATA, HEADERS, SETTINGS = 0, 1, 4
END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8
DOH = "application/dns-message"


def query(name: str) -> bytes:
    q = dns.message.make_query(name, "A")
    q.id = 0  # RFC 8484 4.1: 0 in DoH
    return q.to_wire()


def answer(name: str, addr: str) -> bytes:
    r = dns.message.make_response(dns.message.from_wire(query(name)))
    r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", addr))
    return r.to_wire()


def conversation(tmp_path):
    """Three DoH exchanges and two bodies that are not DNS; returns the path and the
    packet numbers that end each DNS body."""
    cap = Capture()
    conn = Conn(cap)
    conn.handshake()
    ec, es = hpack.Encoder(), hpack.Encoder()
    conn.client(PREFACE + frame(SETTINGS, 0, 0))
    conn.server(frame(SETTINGS, 0, 0))
    ends = {}
    # stream 1: the query in two DATA frames, the second split over two segments
    q1 = query("one.example.")
    conn.client(frame(HEADERS, END_HEADERS, 1, ec.encode(req("/dns-query", content_type=DOH))))
    conn.client(frame(DATA, 0, 1, q1[:10]))
    second = frame(DATA, END_STREAM, 1, q1[10:])
    conn.client(second[:15])
    ends["q1"] = conn.client(second[15:])
    # its answer: one padded DATA frame
    a1 = answer("one.example.", "192.0.2.1")
    resp = [(":status", "200"), ("content-type", DOH)]
    conn.server(frame(HEADERS, END_HEADERS, 1, es.encode(resp)))
    ends["a1"] = conn.server(frame(DATA, END_STREAM | PADDED, 1, b"\x04" + a1 + bytes(4)))
    # stream 3: a GET (no body), answered in a DATA frame split over three segments
    conn.client(frame(HEADERS, END_HEADERS | END_STREAM, 3, ec.encode(req("/q?dns=x", "GET"))))
    a3 = answer("three.example.", "192.0.2.3")
    conn.server(frame(HEADERS, END_HEADERS, 3, es.encode(resp)))
    body = frame(DATA, END_STREAM, 3, a3)
    conn.server(body[:5])
    conn.server(body[5:30])
    ends["a3"] = conn.server(body[30:])
    # stream 5: a body that is not DNS (text/plain), stream 7: a DoH body over 65,535 bytes
    conn.client(frame(HEADERS, END_HEADERS, 5, ec.encode(req("/x", content_type="text/plain"))))
    conn.client(frame(DATA, END_STREAM, 5, q1))
    conn.client(frame(HEADERS, END_HEADERS, 7, ec.encode(req("/dns-query", content_type=DOH))))
    for i in range(5):
        conn.client(frame(DATA, END_STREAM if i == 4 else 0, 7, b"A" * 16000))
    return cap.write(tmp_path / "doh.pcap"), ends


def translate(path) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "pcaptool", "translate", str(path)], capture_output=True, check=True
    ).stdout
    return [orjson.loads(line) for line in out.splitlines()]


def test_doh_bodies_are_decoded_on_the_packet_that_ends_them(tmp_path):
    path, ends = conversation(tmp_path)
    recs = translate(path)
    by_num = {r["pcap"]["num"]: r for r in recs if "pcap" in r}
    with_dns = {n: r["dns"] for n, r in by_num.items() if "dns" in r}
    assert sorted(with_dns) == sorted(ends.values())
    q1, a1, a3 = (with_dns[ends[k]] for k in ("q1", "a1", "a3"))
    assert q1["qr"] == "query" and q1["questions"][0]["name"] == "one.example"
    assert a1["answers"][0]["data"] == "192.0.2.1" and a3["answers"][0]["data"] == "192.0.2.3"
    errors = [r["http"]["error"]["code"] for r in recs if (r.get("http") or {}).get("error")]
    assert errors == ["doh_not_dns"]
    # tshark decodes the same bodies on the same packets (the oversized one aside)
    cmd = ["tshark", "-n", "-r", str(path), "-d", "tcp.port==8080,http2", "-T", "fields"]
    cmd += ["-E", "occurrence=f", "-e", "frame.number", "-e", "dns.id", "-e", "dns.qry.name"]
    rows = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    theirs = {int(n): (i, q) for n, i, q in (r.split("\t") for r in rows) if i}
    oversized = {n for n, (_, q) in theirs.items() if not q}
    assert {n: v for n, v in theirs.items() if n not in oversized} == {
        n: (f"0x{d['id']:04x}", d["questions"][0]["name"]) for n, d in with_dns.items()
    }


def test_doh_body_is_charged_while_held_and_dropped_after_a_gap():
    h2, ec, es = prior_knowledge()
    h2.feed(C, frame(HEADERS, END_HEADERS, 1, ec.encode(req("/dns-query", content_type=DOH))), 1)
    base = h2.kept
    h2.feed(C, frame(DATA, 0, 1, query("a.example.")[:20]), 2)
    assert h2.kept == base + 20
    _, msgs = h2.feed(C, frame(DATA, END_STREAM, 1, query("a.example.")[20:]), 3)
    assert [d["type"] for _, d in msgs] == ["dns"] and h2.kept == base
    # a gap inside a DoH body: the body is not decoded, what it held is given back
    h2.feed(C, frame(HEADERS, END_HEADERS, 3, ec.encode(req("/dns-query", content_type=DOH))), 4)
    base = h2.kept
    data = frame(DATA, END_STREAM, 3, query("b.example.") + bytes(30))
    h2.feed(C, data[:20], 5)
    assert h2.kept == base + 11
    h2.gap(C, 5, 6)
    _, msgs = h2.feed(C, data[25:], 7)
    assert "dns" not in [d["type"] for _, d in msgs] and h2.kept == base
