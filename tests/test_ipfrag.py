"""IP fragment reassembly (pcaptool/decode/ipfrag.py) on captures built here, with tshark
as the oracle: which packet carries the reassembled datagram, its fragments and length,
overlap flags, the reassembled bytes, and what is decoded from them (ports, DNS, HTTP,
the TCP analysis). Then the bounds: timeouts, a fragment flood, hostile pieces."""

from __future__ import annotations

import json
import random
import shutil
import struct
import tracemalloc
from itertools import permutations

import dns.message
import dns.rrset
import jsonschema
import pytest
from expert_oracle import compare as expert_compare
from fragcap import ext, frag4, frag6, fragment_frame, tshark, udp, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packets import OUT_A, OUT_B, A, B, eth, gre, ip4, vxlan
from tcpconv import Capture, Conn

from conftest import REPO, run_pcaptool
from pcaptool.capfile.reader import LINKTYPE_ETHERNET, Packet
from pcaptool.decode import IP_FRAGMENT
from pcaptool.decode.ipfrag import MAX_PAYLOAD, TIMEOUT_NS, Reassembler
from pcaptool.decode.table import walk
from pcaptool.tcp.analyzer import HttpAnalyzer
from pcaptool.translate.serial import Translator

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is absent")
SCHEMA = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
FIELDS = [
    "frame.number", "udp.srcport", "tcp.srcport", "dns.id", "dns.count.answers", "dns.a",
    "ip.fragment", "ipv6.fragment", "ip.reassembled.length", "ipv6.reassembled.length",
    "http.request.method",
]  # fmt: skip


def dns_response(n: int = 40, qid: int = 0x4242) -> bytes:
    """A DNS response of `n` A records (about 16 bytes each)."""
    q = dns.message.make_query("big.example.com.", "A", id=qid)
    r = dns.message.make_response(q)
    addrs = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(n)]
    r.answer.append(dns.rrset.from_text_list("big.example.com.", 60, "IN", "A", addrs))
    return r.to_wire()


def records(path, analyzer=None) -> list[dict]:
    from pcaptool.capfile.reader import CaptureReader, open_input

    stream = open_input(str(path))
    try:
        out = list(Translator(path.name, analyzer).records(CaptureReader(stream, path.name)))
    finally:
        stream.close()
    for rec in (r for r in out if "pcap" in r):
        errors = [e.message for e in VALIDATOR.iter_errors(rec)]
        assert not errors, (rec["message"], errors)
    return [r for r in out if "pcap" in r]


def ours(rec: dict) -> dict[str, list[str]]:
    """The same fields as tshark's, from our record."""
    row = {f: [] for f in FIELDS}
    row["frame.number"] = [str(rec["pcap"]["num"])]
    for layer in [*rec.get("encap", ()), rec]:
        if "udp" in layer or layer.get("type") == "udp":
            row["udp.srcport"].append(str((layer.get("udp") or layer)["sport"]))
    if "tcp" in rec and "seq" in rec["tcp"]:
        row["tcp.srcport"] = [str(rec["tcp"]["sport"])]
    d = rec.get("dns")
    if d:
        row["dns.id"] = [f"0x{d['id']:04x}"]
        row["dns.count.answers"] = [str(d.get("answer_count", len(d["answers"])))]
        row["dns.a"] = [a["data"] for a in d["answers"] if a["type"] == "A"]
    for ip in [*rec.get("encap", ()), rec.get("ip", {})]:
        frag = ip.get("fragment", {})
        v = "ip" if ip.get("version") == 4 else "ipv6"
        if "frames" in frag:
            row[f"{v}.fragment"] += [str(n) for n in frag["frames"]]
            row[f"{v}.reassembled.length"].append(str(frag["len"]))
    for m in [rec["http"], *rec["http"].get("more", [])] if "http" in rec else ():
        if m.get("type") == "request":
            row["http.request.method"].append(m["method"])
    return row


def agree(path, analyzer=None) -> list[dict]:
    """Assert that tshark and translate see the same on every frame; return our records."""
    recs = records(path, analyzer)
    theirs = tshark(path, FIELDS)
    assert len(theirs) == len(recs)
    for t, rec in zip(theirs, recs, strict=True):
        o = ours(rec)
        t["dns.a"].sort()
        o["dns.a"].sort()
        assert t == o, rec["message"]
    return recs


@needs_tshark
@pytest.mark.parametrize("order", list(permutations(range(3))))
def test_dns_response_in_three_ipv4_fragments_in_any_order(tmp_path, order):
    query = ip4(
        udp(40000, 53, dns.message.make_query("big.example.com.", "A", id=0x4242).to_wire()), 17
    )
    pieces = [(0, 256, True), (256, 256, True), (512, 1000, False)]
    frags = frag4(udp(53, 40000, dns_response()), 17, pieces, src=B, dst=A)
    recs = agree(write(tmp_path / "f.pcap", [query, *(frags[i] for i in order)]))
    done = recs[3]  # the last packet completes the datagram
    assert len(done["dns"]["answers"]) == 40 and done["ip"]["fragment"]["datagram"] == 2
    assert done["message"].endswith("3.000ms")  # answers the query of #1
    for rec in recs[1:3]:
        assert rec["ip"]["fragment"] == {"datagram": 2} and "udp" not in rec
        assert "fragment offset=" in rec["message"]


@needs_tshark
@pytest.mark.parametrize(
    ("before", "first", "after"),
    [(b"", 44, b""), (ext(60) + ext(44, 16), 0, b""), (ext(44), 60, ext(17, 16))],
    ids=["plain", "hop-by-hop+destination-before", "destination-after"],
)
def test_ipv6_fragments_after_other_extension_headers(tmp_path, before, first, after):
    # `after`: a destination options header inside the fragmentable part (RFC 8200 4.5)
    payload = after + udp(53, 40000, dns_response(30))
    nxt = 60 if after else 17
    if before and first == 0:  # hop-by-hop, then destination options, then Fragment
        before = ext(60) + ext(44)
    pieces = [(0, 200, True), (400, len(payload) - 400, False), (200, 200, True)]
    recs = agree(
        write(tmp_path / "f6.pcap", frag6(payload, nxt, pieces, before=before, first=first), 0x86DD)
    )
    ip = recs[2]["ip"]
    assert len(recs[2]["dns"]["answers"]) == 30 and ip["proto"] == 17
    assert ip["ext"][-1 - bool(after)] == "fragment"


@needs_tshark
def test_tcp_segment_in_fragments_is_analysed_as_tshark_does(tmp_path):
    cap = Capture()
    c = Conn(cap, server=("10.0.0.9", 80))
    c.handshake()
    n = c.client(b"GET /fragmented HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * 1200 + b"\r\n\r\n")
    c.server(b"HTTP/1.1 204 No Content\r\n\r\n")
    c.close()
    ts, frame, _ = cap.packets[n - 1]
    pieces = [(0, 512, True), (1024, 10_000, False), (512, 512, True)]  # out of order
    cap.packets[n - 1 : n] = [
        (ts + i, f, len(f)) for i, f in enumerate(fragment_frame(frame, pieces))
    ]
    path = cap.write(tmp_path / "t.pcap")
    recs = agree(path, HttpAnalyzer())
    done = recs[n + 1]
    assert done["http"]["method"] == "GET" and done["ip"]["fragment"]["frames"] == [n, n + 2, n + 1]
    assert expert_compare(path) == []  # tcp.analysis equal, frame by frame


def test_workers_send_a_datagram_s_fragments_to_its_connection_s_worker(tmp_path):
    """--workers N --ordered equals one process when the connections carry fragments."""
    cap = Capture()
    conns = [
        Conn(cap, client=(f"10.0.0.{k + 1}", 40000 + k), server=("10.0.0.9", 80)) for k in range(6)
    ]
    for c in conns:
        c.handshake()
    for k, c in enumerate(conns):
        n = c.client(b"GET /f HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * (600 + k) + b"\r\n\r\n")
        ts, frame, _ = cap.packets[n - 1]
        pieces = [(0, 256, True), (256, 256, True), (512, 5000, False)]
        cap.packets[n - 1 :] = [
            (ts + i, f, len(f)) for i, f in enumerate(fragment_frame(frame, pieces))
        ]
        cap.ts += 10
        c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    for c in conns:
        c.close()
    path = cap.write(tmp_path / "w.pcap")
    one = run_pcaptool("translate", "--flows", str(path))
    assert one.returncode == 0 and one.stdout.count(b'"method":"GET"') >= 6
    for workers in ("2", "3"):
        par = run_pcaptool("translate", "--flows", "--workers", workers, "--ordered", str(path))
        assert par.stdout.splitlines() == one.stdout.splitlines()


def _tunnel_cases():
    inner = frag4(udp(53, 40000, dns_response()), 17, [(256, 1000, False), (0, 256, True)])
    gre_frames = [eth(ip4(gre(f, 0x0800), 47, OUT_A, OUT_B)) for f in inner]
    vx = [eth(ip4(udp(51000, 4789, vxlan(eth(f), 42)), 17, OUT_A, OUT_B)) for f in inner]
    outer = frag4(udp(51000, 4789, vxlan(eth(ip4(udp(53, 40000, dns_response()), 17)), 7)),
                  17, [(0, 512, True), (512, 2000, False)], src=OUT_A, dst=OUT_B)  # fmt: skip
    return [("gre", gre_frames), ("vxlan", vx), ("outer-fragmented-vxlan", outer)]


@needs_tshark
@pytest.mark.parametrize(
    ("name", "frames"), _tunnel_cases(), ids=lambda c: c if isinstance(c, str) else ""
)
def test_fragments_inside_tunnels(tmp_path, name, frames):
    recs = agree(write(tmp_path / f"{name}.pcap", frames))
    assert len(recs[-1]["dns"]["answers"]) == 40 and recs[-1]["encap"]
    assert "dns" not in recs[0]


OVERLAPS = {  # (offset, bytes, more) in arrival order; payload bytes vary per copy
    "duplicate": [(0, 64, True), (0, 64, True), (64, 400, False)],
    "equal-offset-conflict": [(0, 64, True), (64, 64, True), (64, 64, True), (128, 400, False)],
    "lower-offset-wins": [(64, 128, True), (0, 128, True), (192, 400, False)],
    "two-tails": [(0, 64, True), (64, 400, False), (64, 200, False)],
    "past-the-tail": [(0, 64, True), (64, 400, True), (64, 200, False)],
}


def _datagram(pieces, seed: int, ident: int) -> list[bytes]:
    """UDP to an unknown port whose data bytes differ in each copy of a stretch."""
    end = max(o + n for o, n, _ in pieces)
    rng = random.Random(seed)
    out = []
    for i, (o, n, more) in enumerate(pieces):
        data = bytearray(rng.randbytes(end))
        data[:8] = struct.pack("!HHHH", 7000, 9999, end, 0)
        if i and rng.random() < 0.5:  # an identical copy: overlap without conflict
            data = bytearray(out[-1][1]) if len(out[-1][1]) == end else data
        out.append(((o, n, more), bytes(data)))
    return [frag4(d, 17, [p], ident=ident)[0] for p, d in out]


def _reassembled(frames: list[bytes]) -> dict[int, bytes]:
    """frame number -> the bytes our reassembler hands on."""
    frags, got = Reassembler(), {}
    for num, frame in enumerate(frames, 1):
        rec: dict = {"pcap": {"num": num}}
        layer, table, key, off, end = walk(frame, LINKTYPE_ETHERNET, rec)
        if table is IP_FRAGMENT:
            pkt = Packet(num * 1000, len(frame), len(frame), frame, 0, LINKTYPE_ETHERNET)
            out, _ = frags.add(num, pkt, rec, key, off, end)
            if out is not pkt:
                got[num] = out.data
    return got


@needs_tshark
def test_overlaps_duplicates_and_random_pieces_reassemble_as_tshark(tmp_path):
    """Named overlap patterns and 150 random piece sets (offsets, sizes, copies, order) in
    one capture; the reassembled bytes and the flags must be tshark's."""
    rng = random.Random(12)
    frames = []
    cases = list(OVERLAPS.values())
    for _ in range(150):
        size = rng.randrange(16, 120) * 8
        pieces = [
            (o * 8, rng.randrange(1, 40) * 8, True)
            for o in (rng.randrange(size // 8) for _ in range(rng.randrange(1, 6)))
        ]
        pieces.append((size, rng.randrange(1, 30), False))
        pieces += [(0, rng.randrange(1, size // 8 + 1) * 8, True)]
        rng.shuffle(pieces)
        cases.append(pieces)
    for ident, pieces in enumerate(cases, 1):
        frames += [eth(f) for f in _datagram(pieces, ident, ident)]
    path = write(tmp_path / "o.pcap", frames)
    fields = [
        "frame.number",
        "ip.reassembled.data",
        "ip.fragment.overlap",
        "ip.fragment.overlap.conflict",
    ]
    theirs = {int(r["frame.number"][0]): r for r in tshark(path, fields)}
    got = _reassembled(frames)
    want = {
        n: bytes.fromhex(r["ip.reassembled.data"][0])
        for n, r in theirs.items()
        if r["ip.reassembled.data"]
    }
    assert got == want
    for rec in records(path):
        frag, t = rec["ip"]["fragment"], theirs[rec["pcap"]["num"]]
        if "frames" in frag:
            assert frag.get("overlap", False) == bool(t["ip.fragment.overlap"]), rec["message"]
            assert frag.get("conflict", False) == bool(t["ip.fragment.overlap.conflict"])


def test_an_unfinished_datagram_expires_after_60_s():
    frags = frag4(udp(53, 40000, dns_response()), 17, [(0, 256, True), (256, 1000, False)])
    tr = Translator("t")
    first = tr.translate(1, Packet(0, len(eth(frags[0])), len(eth(frags[0])), eth(frags[0]), 0, 1))
    late = eth(frags[1])
    rec = tr.translate(2, Packet(TIMEOUT_NS + 1, len(late), len(late), late, 0, 1))
    assert first["ip"]["fragment"] == {"datagram": 1}
    assert rec["ip"]["fragment"] == {"datagram": 2, "evicted": 1} and "dns" not in rec
    assert tr.fragments.expired == 1 and len(tr.fragments.pending) == 1


def test_a_fragment_flood_is_bounded_and_counted():
    """5,000 datagrams that never complete, 1,400 bytes each, into a table of 1,000: the
    table stays at its cap, the oldest go first, each eviction is on a record; and the
    memory traced stays well below what holding them all would take (7 MB)."""
    tr = Translator("flood")
    tr.fragments = Reassembler(max_pending=1000)
    body = bytes(1400)
    tracemalloc.start()
    evicted = 0
    for i in range(5_000):
        f = eth(frag4(udp(53, 53, body), 17, [(0, 1400, True)], ident=i)[0])
        rec = tr.translate(i + 1, Packet(i * 1000, len(f), len(f), f, 0, 1))
        evicted += rec["ip"]["fragment"].get("evicted", 0)
        assert len(tr.fragments.pending) <= 1000
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert evicted == tr.fragments.evicted == 4_000
    assert next(iter(tr.fragments.pending.values())).first_num == 4_001  # oldest evicted
    assert peak < 4 << 20
    tr.fragments = Reassembler(max_bytes=1 << 20)  # the byte cap alone
    for i in range(2000):
        f = eth(frag4(udp(53, 53, body), 17, [(0, 1400, True)], ident=i)[0])
        tr.translate(i + 1, Packet(i * 1000, len(f), len(f), f, 0, 1))
        assert tr.fragments.bytes <= 1 << 20
    assert tr.fragments.evicted > 1000


def _at(offset: int, data: bytes, ident: int = 7) -> bytes:
    """An Ethernet frame of one IPv4 fragment (MF set) of `data` at `offset` bytes."""
    f = eth(frag4(data, 17, [(0, len(data), True)], ident=ident)[0])
    return f[:20] + struct.pack("!H", 0x2000 | offset // 8) + f[22:]


def test_a_fragment_past_64_kib_and_a_swarm_of_tiny_pieces_are_refused():
    f = _at(65528, bytes(16))
    rec = Translator("t").translate(1, Packet(0, len(f), len(f), f, 0, 1))
    assert "65535" in rec["ip"]["fragment"]["error"] and MAX_PAYLOAD == 65535
    tr = Translator("t")
    for i in range(8192):  # every other 8-byte stretch, then copies: the most it may hold
        f = _at(16 * (i % 4096), bytes(8))
        rec = tr.translate(i + 1, Packet(i, len(f), len(f), f, 0, 1))
        assert tr.fragments.bytes <= 65536 + 64 * 2 * 8192
    assert tr.fragments.evicted == 0 and len(tr.fragments.pending) == 1
    rec = tr.translate(8193, Packet(8193, len(f), len(f), f, 0, 1))  # one fragment more
    assert rec["ip"]["fragment"] == {"datagram": 1, "evicted": 1} and not tr.fragments.pending


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 8191), st.integers(0, 1600), st.booleans(), st.binary(max_size=40)
        ),
        max_size=12,
    )
)
def test_random_fragments_never_crash(pieces):
    tr = Translator("fuzz", HttpAnalyzer(flows=True))
    for i, (off, size, more, head) in enumerate(pieces):
        payload = head + bytes(size)
        f = eth(
            frag4(payload, (6, 17, 47, 1)[i % 4], [(off * 8, len(payload), more)], ident=i % 3)[0]
        )
        rec = tr.translate(i + 1, Packet(i, len(f), len(f), f, 0, 1))
        assert rec["message"]
    list(tr.records([]))


@needs_tshark
@pytest.mark.parametrize("atomic", [False, True], ids=["snap-length-cut", "ipv6-atomic"])
def test_fragments_tshark_does_not_reassemble(tmp_path, atomic):
    """A first fragment the snap length cut is decoded as far as it goes, not held; an IPv6
    atomic fragment (offset 0, M clear) is decoded as it stands."""
    cap = Capture()
    if atomic:
        for f in frag6(udp(53, 40000, dns_response(3)), 17, [(0, 4000, False)]):
            cap.add(eth(f, 0x86DD))
    else:
        cap.snaplen = 300
        for f in frag4(udp(53, 40000, dns_response()), 17, [(0, 512, True), (512, 900, False)]):
            cap.add(eth(f))
    recs = agree(cap.write(tmp_path / "n.pcap"))
    assert "fragment" not in recs[0]["ip"] and "udp" in recs[0]
