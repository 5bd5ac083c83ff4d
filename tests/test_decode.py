"""The decoders on packets built here (tests/packets.py): tunnels to the inner packet,
every DNS type, partial headers, and, as a class, every decoder on every field broken."""

from __future__ import annotations

import json
import struct
import subprocess

import dpkt
import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packets import (
    CASES,
    INNER_FRAME,
    INNER_TCP,
    TUNNELS,
    A,
    B,
    dns_query,
    dns_response,
    eth,
    ip4,
    ip6,
    tcp,
    udp,
)

from conftest import REPO
from pcaptool.capfile.reader import LINKTYPE_ETHERNET, Packet
from pcaptool.decode import Truncated
from pcaptool.decode.table import TABLES, walk
from pcaptool.translate.parallel import flow_of
from pcaptool.translate.serial import Translator

SCHEMA = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
REVERSED_TCP = ip4(
    tcp(80, 40000, b"HTTP/1.1 200 OK\r\n\r\n"[:18]), 6, bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
)
assert len(REVERSED_TCP) == len(INNER_TCP)


def translate(
    frame: bytes, linktype: int = LINKTYPE_ETHERNET, wirelen: int | None = None, check=True
) -> dict:
    pkt = Packet(0, len(frame), wirelen or len(frame), frame, 0, linktype)
    rec = Translator("test").translate(1, pkt)
    if check:
        errors = [e.message for e in VALIDATOR.iter_errors(rec)]
        assert not errors, (rec["message"], errors)
    assert ("error" in rec) == (rec["severity"] == "ERROR")
    assert rec["message"] and orjson.dumps(rec)
    return rec


@pytest.mark.parametrize(
    ("name", "linktype", "frame", "encap"), TUNNELS, ids=[t[0] for t in TUNNELS]
)
def test_tunnels_decode_to_the_inner_packet_and_keep_the_outer_layers(
    name: str, linktype: int, frame: bytes, encap: list[str]
) -> None:
    rec = translate(frame, linktype)
    plain = translate(INNER_FRAME)
    assert "error" not in rec
    assert [e["type"] for e in rec["encap"]] == encap
    assert rec["ip"]["src"] == "10.0.0.1" and rec["ip"]["dst"] == "10.0.0.2"
    assert (rec["tcp"]["sport"], rec["tcp"]["dport"]) == (40000, 80)
    assert rec["flow"] == plain["flow"]  # the inner connection's flow, as without the tunnel
    assert rec["message"].startswith(plain["message"]) and " (in " in rec["message"]
    # parallel translate shards both directions of the inner connection to one worker
    key, is_tcp = flow_of(linktype, frame)
    back, _ = flow_of(linktype, frame.replace(INNER_TCP, REVERSED_TCP))
    assert is_tcp and key is not None and key == back


def test_tunnel_fields() -> None:
    by_name = {name: translate(frame, lt)["encap"] for name, lt, frame, _ in TUNNELS}
    assert by_name["mpls"][0]["labels"] == [100, 200]
    assert by_name["pppoe"][0]["session"] == 0x2D and by_name["pppoe"][0]["ppp_proto"] == 0x21
    assert by_name["gre"][1]["key"] == 7 and by_name["gre"][1]["proto"] == 0x0800
    assert by_name["vxlan"][2]["vni"] == 42 and by_name["vxlan"][1]["dport"] == 4789
    assert by_name["geneve"][2] == {"type": "geneve", "vni": 99, "proto": 0x6558, "options_len": 8}
    assert by_name["ipip"][0]["src"] == "192.0.2.1"
    assert translate(TUNNELS[1][2])["l2"]["vlan"] == [10, 20]


def test_every_dns_type_decodes_with_edns() -> None:
    rec = translate(eth(ip4(udp(53, 40000, dns_response()), 17)))
    d = rec["dns"]
    assert "truncated" not in d and "error" not in rec
    types = [a["type"] for a in d["answers"]]
    assert types == [
        "A", "RRSIG", "NSEC", "NSEC3", "DNSKEY", "DS", "SVCB", "HTTPS", "CAA", "TXT", "SRV", "TYPE65280",
    ]  # fmt: skip
    data = {a["type"]: a["data"] for a in d["answers"]}
    assert data["RRSIG"].startswith("A 13 2 300 20250101000000 20240101000000 12345 example.com ")
    assert data["SRV"] == "10 5 443 svc.example.com"
    assert data["CAA"] == '0 issue "letsencrypt.org"'
    assert data["TYPE65280"] == "\\# 3 abcdef"  # RFC 3597
    assert 'alpn="h2,h3"' in data["SVCB"]
    assert d["edns"]["do"] is True and d["edns"]["udp_size"] == 1232
    assert d["edns"]["options"] == [{"code": 8, "name": "ECS", "data": "00011800c00002"}]


@pytest.mark.parametrize("keep", [40, 120, 300])
def test_dns_cut_by_the_snap_length_is_truncated_not_an_error(keep: int) -> None:
    frame = eth(ip4(udp(53, 40000, dns_response()), 17))
    cut = translate(frame[: 42 + keep], wirelen=len(frame))
    assert "error" not in cut and cut["dns"]["truncated"] is True
    assert cut["dns"]["answer_count"] == 12 and len(cut["dns"]["answers"]) < 12
    # The same bytes, not cut by the snap length: a malformed message, an error record
    # that keeps the header and what parsed.
    short = translate(frame[: 42 + keep])
    assert short["error"]["layer"] == "dns" and short["dns"]["id"] == cut["dns"]["id"]


def test_partial_headers_keep_what_was_captured() -> None:
    seg = eth(ip4(tcp(1234, 80), 6))
    for keep in range(4, 20):
        rec = translate(seg[: 34 + keep], wirelen=len(seg))
        assert rec["error"]["layer"] == "tcp"
        assert (rec["tcp"]["sport"], rec["tcp"]["dport"]) == (1234, 80)
        assert rec["flow"]["id"]  # the flow of its ports
    ping = eth(ip4(struct.pack("!BBHHH", 8, 0, 0, 7, 1), 1))
    rec = translate(ping[: 34 + 6], wirelen=len(ping))
    assert (rec["icmp"]["type"], rec["icmp"]["code"], rec["error"]["layer"]) == (8, 0, "icmp")
    dgram = eth(ip4(udp(5000, 6000, b"abc"), 17))
    rec = translate(dgram[: 34 + 5])
    assert (rec["udp"]["sport"], rec["udp"]["dport"], rec["error"]["layer"]) == (5000, 6000, "udp")


@pytest.mark.parametrize(
    "payload",
    [b"\x16\x03\x01\x00\x00", b"\x16\x03\x01\x00\x00" * 3 + b"\x16", b"\x16\x03\x03\x00\x01\x01",
     b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", b"\x16\x03\x01\xff\xff\x02"],
)  # fmt: skip
def test_tls_records_of_any_length_never_crash(payload: bytes) -> None:
    rec = translate(eth(ip4(tcp(40000, 443, payload), 6)))
    assert rec["tls"]["records"][0]["type"] == "handshake"


VALUES = (0x00, 0x01, 0x7F, 0x80, 0xFF)


@pytest.mark.parametrize(("name", "linktype", "frame"), CASES, ids=[c[0] for c in CASES])
def test_every_field_short_or_huge_gives_a_record_never_a_traceback(
    name: str, linktype: int, frame: bytes
) -> None:
    """Every byte of every header set to 0, 1, 127, 128, 255 (lengths short and huge,
    numbers at their limits), and every prefix cut by the snap length: a valid record."""
    n = 0
    for pos in range(len(frame)):
        for value in VALUES:
            n += 1  # the schema check is slow: every 7th record (all are checked for shape)
            translate(frame[:pos] + bytes([value]) + frame[pos + 1 :], linktype, check=n % 7 == 0)
    for keep in range(len(frame)):
        translate(frame[:keep], linktype, wirelen=len(frame), check=keep % 3 == 0)


DECODERS = sorted(
    {decode for table in TABLES.values() for _layer, decode in table.values()}, key=repr
)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(DECODERS), st.binary(max_size=300), st.integers(0, 64), st.integers(0, 400))
def test_every_decoder_steps_or_raises_truncated(decode, buf: bytes, off: int, end: int) -> None:
    """The decoder interface, for every decoder in the tables, on any bytes: a step
    inside the buffer, None, or Truncated; nothing else."""
    end = min(end, len(buf))
    rec: dict = {
        "pcap": {"truncated": False},
        "ip": {"version": 4, "src": "a", "dst": "b", "proto": 0},
    }
    try:
        step = decode(buf, off, end, rec)
    except Truncated as exc:
        assert exc.layer and exc.reason
        return
    if step is not None:
        table, _key, noff, nend = step
        assert table in TABLES.values() and noff <= nend + 64 and nend <= len(buf)
    json.dumps(rec)


def test_nested_tunnels_are_bounded() -> None:
    frame = INNER_TCP
    for _ in range(40):
        frame = ip4(frame, 4)
    rec = translate(eth(frame))
    assert rec["error"]["layer"] == "encap"
    with pytest.raises(Truncated):
        walk(eth(frame), LINKTYPE_ETHERNET, {})


def _icmp_error(quoted: bytes, v6: bool = False) -> bytes:
    if v6:  # Destination Unreachable (port), then the quoted IPv6 packet
        return eth(ip6(struct.pack("!BBHI", 1, 4, 0, 0) + quoted, 58), 0x86DD)
    return eth(ip4(struct.pack("!BBHI", 3, 3, 0, 0) + quoted, 1, B, A))


def test_an_icmp_error_quoting_dns_carries_the_quoted_message(tmp_path) -> None:
    """An ICMP error quoting a DNS datagram (whole or cut) carries its DNS under
    `icmp.orig.dns`, as tshark decodes it; the packet itself is not DNS. A quote that
    stops inside the DNS header keeps the id and flags when they are there (tshark too)."""
    query = dns_query()
    whole = ip4(udp(40000, 53, query), 17)
    response = ip4(udp(53, 40000, dns_response()), 17, B, A)
    frames = [
        _icmp_error(whole),
        _icmp_error(response[: 28 + 60]),  # the quote stops inside the records
        _icmp_error(ip6(udp(5353, 5353, query), 17), v6=True),
        _icmp_error(response[: 28 + 6]),  # inside the header: id and flags
        _icmp_error(response[: 28 + 3]),  # not even the flags: the ports only
    ]
    recs = [translate(f) for f in frames]
    assert all("dns" not in r and "error" not in r for r in recs)
    quoted = [r["icmp"]["orig"].get("dns") for r in recs]
    assert quoted[0]["questions"][0] == {"name": "example.com", "type": "AAAA", "class": "IN"}
    assert quoted[1]["qr"] == "response" and quoted[1]["truncated"] is True
    assert quoted[2]["id"] == quoted[0]["id"]
    assert quoted[3]["qr"] == "response" and quoted[3]["questions"] == []
    assert quoted[3]["truncated"] is True and quoted[4] is None
    assert recs[4]["icmp"]["orig"]["sport"] == 53
    # tshark decodes the same quoted messages
    path = tmp_path / "icmp-dns.pcap"
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f)
        for i, frame in enumerate(frames):
            writer.writepkt(frame, ts=1_700_000_000 + i)
    fields = ("dns.id", "dns.qry.name", "dns.flags.response")
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
        + [arg for field in fields for arg in ("-e", field)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    ours = [
        "\t".join(
            (
                f"0x{d['id']:04x}",
                d["questions"][0]["name"] if d["questions"] else "",
                str(int(d["qr"] == "response")),
            )
        )
        if d
        else "\t\t"
        for d in quoted
    ]
    assert out == ours
