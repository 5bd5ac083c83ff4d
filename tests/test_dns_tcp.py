"""DNS over TCP from the reassembled stream (2-byte length prefix; several messages in a
segment, a message split over segments, retransmissions): the response carries its
query, latency and rcode, an unanswered query times out; tshark is the oracle."""

from __future__ import annotations

import shutil
import subprocess

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tcpconv import Capture, Conn
from test_outcome import dns

from conftest import run_pcaptool
from pcaptool.decode.dns import RCODES

MS = 1_000_000


def framed(*messages: bytes) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in messages)


def dns_over_tcp(path, client=("10.0.0.1", 40001)):
    """Queries 1 and 2 in one segment; 3 split over two; answers 2 and 1 in one segment,
    the second split; 3 answered NXDOMAIN; a retransmitted segment; 4 never answered."""
    cap = Capture()
    c = Conn(cap, client=client, server=("10.0.0.53", 53))
    c.handshake()
    n = {}
    n["q12"] = c.client(framed(dns(1, "one.example"), dns(2, "two.example")))
    q3 = framed(dns(3, "three.example"))
    n["q3a"] = c.client(q3[:9], dt=2 * MS)
    n["q3b"] = c.client(q3[9:], dt=MS)
    r = framed(dns(2, "two.example", True), dns(1, "one.example", True))
    n["r2"] = c.server(r[:40], dt=7 * MS)  # answer 2 whole, answer 1 begun
    seq = c.sseq
    n["r1"] = c.server(r[40:], dt=3 * MS)
    n["rt"] = c.raw(False, seq, r[40:], dt=200 * MS)  # retransmitted: counted once
    n["r3"] = c.server(framed(dns(3, "three.example", True, 3)), dt=MS)
    n["q4"] = c.client(framed(dns(4, "four.example")), dt=MS)
    c.client_ack(dt=7000 * MS)
    c.close()
    return cap.write(path), n


def records(path, *args: str) -> list[dict]:
    r = run_pcaptool("translate", *args, str(path))
    assert r.returncode == 0, r.stderr
    return [orjson.loads(x) for x in r.stdout.splitlines()]


def by_num(recs):
    return {r["pcap"]["num"]: r for r in recs if "pcap" in r}


def test_responses_over_tcp_carry_their_query_latency_and_rcode(tmp_path):
    path, n = dns_over_tcp(tmp_path / "t.pcap")
    recs = records(path, "--flows")
    pk = by_num(recs)
    q12 = pk[n["q12"]]["dns"]
    assert [q12["id"], q12["more"][0]["id"]] == [1, 2]
    assert pk[n["q3b"]]["dns"]["id"] == 3 and pk[n["q3b"]]["dns"]["reassembled"]
    r2 = pk[n["r2"]]["dns"]
    assert r2["id"] == 2 and "more" not in r2
    assert r2["query"]["num"] == n["q12"] and r2["latency"] == 10 * MS
    r1 = pk[n["r1"]]["dns"]
    assert r1["id"] == 1 and r1["reassembled"] and r1["query"]["num"] == n["q12"]
    assert "ms" in pk[n["r1"]]["message"]
    assert "query" not in pk[n["rt"]].get("dns", {})  # the retransmission matches nothing
    r3 = pk[n["r3"]]
    assert r3["dns"]["rcode"] == "NXDOMAIN" and r3["dns"]["query"]["num"] == n["q3b"]
    assert r3["severity"] == "WARNING"
    (late,) = [r for r in recs if r.get("dns", {}).get("outcome") == "timeout"]
    assert late["dns"]["query"]["num"] == n["q4"]
    labels = late["logging.googleapis.com/labels"]
    assert labels["proto"] == "TCP" and labels["run"] == "test-run"
    assert late["flow"]["id"] == pk[n["q4"]]["flow"]["id"]
    (conn,) = [r["conn"] for r in recs if r.get("conn", {}).get("proto") == "tcp"]
    assert conn["service"] == "dns" and conn["dns_messages"] == 7


def test_workers_match_dns_over_tcp_as_one_process(tmp_path):
    path, _ = dns_over_tcp(tmp_path / "t.pcap")
    one = run_pcaptool("translate", "--flows", str(path))
    two = run_pcaptool("translate", "--flows", "--workers", "2", "--ordered", str(path))
    assert one.returncode == two.returncode == 0
    assert two.stdout == one.stdout


def tshark_dns(path, where: str = "dns") -> dict[int, list[tuple]]:
    """{frame: [(id, is response, response_to, time in ns, rcode)]} from tshark."""
    fields = ["frame.number", "dns.id", "dns.flags.response", "dns.response_to", "dns.time"]
    fields.append("dns.flags.rcode")
    cmd = ["tshark", "-r", str(path), "-Y", where, "-T", "fields", "-E", "aggregator=;"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    got: dict[int, list[tuple]] = {}
    for line in out.splitlines():
        num, ids, resp, to, time, rcode = (line.split("\t") + [""] * 6)[:6]
        cols = [v.split(";") for v in (ids, resp, to, time, rcode)]
        k = len(cols[0])
        cols = [c + [""] * (k - len(c)) for c in cols]
        got[int(num)] = [
            (int(i, 0), r in ("1", "True"), int(t) if t else None,
             round(float(s) * 1e9) if s else None, int(rc, 0) if rc else None)
            for i, r, t, s, rc in zip(*cols, strict=True)
        ]  # fmt: skip
    return got


def ours(recs, tcp_only: bool = False) -> dict[int, list[tuple]]:
    rcodes = {name: code for code, name in RCODES.items()}
    got = {}
    for num, r in by_num(recs).items():
        d = r.get("dns")
        if not d or d.get("incomplete") or (tcp_only and "tcp" not in r):
            continue
        got[num] = [
            (m["id"], m["qr"] == "response", m.get("query", {}).get("num"), m.get("latency"),
             rcodes[m["rcode"]] if m["qr"] == "response" else None)
            for m in [d, *d.get("more", [])]
        ]  # fmt: skip
    return got


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_agrees_on_messages_matches_and_latency(tmp_path):
    path, n = dns_over_tcp(tmp_path / "t.pcap")
    theirs = tshark_dns(path)
    mine = ours(records(path))
    # both read the stream once: the retransmitted copy is no message of its own
    assert n["rt"] not in theirs and n["rt"] not in mine
    for num in theirs:  # tshark has no rcode on queries
        theirs[num] = [(i, r, t, s, rc if r else None) for i, r, t, s, rc in theirs[num]]
    assert mine == theirs


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
@pytest.mark.parametrize(
    "name",
    [
        "sv-dns-tcp-multi-msg-segment.pcap",
        "zeek-dns-edns-cookie-tcp.pcap",
        "zeek-dns-edns-ecs-dnssec-tc.pcap",
    ],
)
def test_tshark_agrees_on_corpus_dns_over_tcp(corpus, name):
    path = corpus / name
    theirs = tshark_dns(path, "tcp.port == 53 && dns")
    for num in theirs:
        theirs[num] = [(i, r, t, s, rc if r else None) for i, r, t, s, rc in theirs[num]]
    mine = ours(records(path), tcp_only=True)
    assert theirs and mine == theirs


def translate_in_process(cap: Capture) -> list[dict]:
    from pcaptool.capfile.reader import Packet
    from pcaptool.tcp.analyzer import HttpAnalyzer
    from pcaptool.translate.serial import Translator

    pkts = [Packet(ts, len(f), n, f, 0, 1) for ts, f, n in cap.packets]
    return list(Translator("h.pcap", HttpAnalyzer()).records(pkts))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 6),
    cuts=st.lists(st.integers(1, 400), max_size=12),
    names=st.lists(
        st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=60),
        min_size=6,
        max_size=6,
    ),
    answered=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_any_segmentation_reads_every_message_once(count, cuts, answered, names):
    """However the two streams are cut into segments, every message is read once, in
    order, each answer matched to its query, and the unanswered ones time out."""
    ids = list(range(1, count + 1))
    asks = framed(*[dns(i, f"{names[i - 1]}.example") for i in ids])
    tells = framed(*[dns(i, f"{names[i - 1]}.example", True) for i in ids if answered[i - 1]])
    cap = Capture()
    c = Conn(cap, client=("10.0.0.1", 40100), server=("10.0.0.53", 53))
    c.handshake()
    for data, send in ((asks, c.client), (tells, c.server)):
        pos = 0
        for cut in [*cuts, len(data)]:
            if pos < len(data):
                send(data[pos : pos + cut], dt=MS)
                pos += cut
    c.close()
    recs = translate_in_process(cap)
    msgs = [
        m for r in recs if "pcap" in r and "dns" in r for m in [r["dns"], *r["dns"].get("more", [])]
    ]
    assert not [r for r in recs if "error" in r]
    starts = [m for m in msgs if m.get("incomplete")]  # a segment that starts a message
    assert all(m["id"] in ids for m in starts)
    msgs = [m for m in msgs if not m.get("incomplete")]
    queries = [m["id"] for m in msgs if m["qr"] == "query"]
    responses = [m for m in msgs if m["qr"] == "response"]
    assert queries == ids
    assert [m["id"] for m in responses] == [i for i in ids if answered[i - 1]]
    assert all(m["latency"] > 0 and m["query"]["id"] == m["id"] for m in responses)
    late = [r["dns"]["id"] for r in recs if r.get("dns", {}).get("outcome") == "timeout"]
    assert late == [i for i in ids if not answered[i - 1]]


def txt_response(qid: int, name: str, inner: bytes) -> bytes:
    """A response to an A query whose one (TXT) answer holds `inner` bytes."""
    import struct

    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    q += struct.pack("!HH", 1, 1)  # the question of dns(qid, name): A, IN
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60, len(inner) + 1) + bytes([len(inner)])
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + q + rr + inner


@pytest.mark.parametrize(
    "inner",
    [
        framed(dns(99, "fake.example")),  # parses as a whole message of its own
        framed(b"\x00\x4d\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff"),  # does not parse
    ],
)
def test_a_segment_that_only_looks_like_a_message_start(tmp_path, inner):
    """A segment inside a message whose bytes look like a length and header: it is no
    DNS message of its own, and the stream still reads it."""
    cap = Capture()
    c = Conn(cap, client=("10.0.0.1", 40200), server=("10.0.0.53", 53))
    c.handshake()
    q = c.client(framed(dns(5, "t.example")))
    whole = framed(txt_response(5, "t.example", inner + b"tail"))
    at = whole.index(inner)
    c.server(whole[:at], dt=MS)
    mid = c.server(whole[at : at + len(inner)], dt=MS)
    last = c.server(whole[at + len(inner) :], dt=MS)
    c.close()
    pk = by_num(translate_in_process(cap))
    assert "dns" not in pk[mid] and "error" not in pk[mid]
    assert pk[mid]["message"].split()[1] == "TCP"
    r = pk[last]["dns"]
    assert r["id"] == 5 and r["reassembled"] and r["query"]["num"] == q
