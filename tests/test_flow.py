"""Flow ids and Community ID v1 against the `communityid` package (the spec's reference)."""

from __future__ import annotations

import communityid
import pytest

from pcaptool.record.flow import FlowTable, community_id

CID = communityid.CommunityID()
MAKE = {
    6: communityid.FlowTuple.make_tcp,
    17: communityid.FlowTuple.make_udp,
    1: communityid.FlowTuple.make_icmp,
    58: communityid.FlowTuple.make_icmp6,
}

CASES = [
    (6, "128.232.110.120", "66.35.250.204", 34855, 80),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855),
    (17, "8.8.8.8", "192.168.1.52", 53, 54585),
    (17, "192.168.1.52", "192.168.1.52", 9999, 53),
    (1, "192.168.0.89", "192.168.0.1", 8, 0),
    (1, "192.168.0.1", "192.168.0.89", 0, 0),
    (1, "192.168.0.1", "10.0.0.1", 3, 3),
    (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 0),
    (58, "3ffe:507:0:1:260:97ff:fe07:69ea", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4),
    (6, "2001:db8::1", "2001:db8::2", 80, 1234),
]


@pytest.mark.parametrize("case", CASES)
def test_community_id_equals_the_reference_implementation(case) -> None:
    proto, src, dst, sport, dport = case
    assert community_id(*case) == CID.calc(MAKE[proto](src, dst, sport, dport))


def test_published_test_vector() -> None:
    # The spec's README example for TCP.
    assert (
        community_id(6, "128.232.110.120", "66.35.250.204", 34855, 80)
        == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    )


def test_protocol_without_ports() -> None:
    assert community_id(47, "10.0.0.1", "10.0.0.2") == CID.calc(
        communityid.FlowTuple(47, "10.0.0.1", "10.0.0.2")
    )


def test_both_directions_share_one_flow_and_first_is_reported_once() -> None:
    table = FlowTable()
    a, first_a = table.get(6, "10.0.0.1", "10.0.0.2", 1000, 80)
    b, first_b = table.get(6, "10.0.0.2", "10.0.0.1", 80, 1000)
    assert a is b and first_a and not first_b
    assert len(a.id) == 16


def test_table_is_bounded() -> None:
    table = FlowTable(limit=1000)
    for port in range(1, 5000):
        table.get(17, "10.0.0.1", "10.0.0.2", port, 53)
    assert len(table) <= 1000 + 2


def test_packet_and_connection_records_share_one_envelope(tmp_path):
    """The records of one connection, packet ones and the `--flows` one, carry the same
    flow, labels and operation (one producer, `last` on the closing packet and the
    connection record), built by pcaptool.record.envelope."""
    from tcpconv import Capture, Conn

    from pcaptool.capfile.reader import CaptureReader
    from pcaptool.record.envelope import PRODUCER, direction
    from pcaptool.tcp.analyzer import HttpAnalyzer
    from pcaptool.translate.serial import Translator

    cap = Capture()
    c = Conn(cap, client=("10.0.0.1", 40000), server=("10.0.0.9", 80))
    c.handshake()
    c.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    c.server(b"HTTP/1.1 204 No Content\r\n\r\n")
    closing = c.close()
    path = cap.write(tmp_path / "c.pcap")
    with open(path, "rb") as f:
        recs = list(Translator("c.pcap", HttpAnalyzer(flows=True)).records(CaptureReader(f)))
    (conn,) = [r for r in recs if "conn" in r]
    pkts = [r for r in recs if "conn" not in r]
    assert "pcap" not in conn and all("pcap" in r for r in pkts)
    flow_id = pkts[0]["flow"]["id"]
    for r in recs:
        assert r["flow"]["id"] == flow_id
        assert r["logging.googleapis.com/labels"]["flow"] == flow_id
        op = r["logging.googleapis.com/operation"]
        assert op["id"] == flow_id and op["producer"] == PRODUCER
    lasts = [r["pcap"]["num"] for r in pkts if r["logging.googleapis.com/operation"].get("last")]
    assert lasts and lasts[0] in closing
    assert conn["logging.googleapis.com/operation"]["last"] is True
    assert "10.0.0.1:40000 > 10.0.0.9:80" in conn["message"]
    assert "10.0.0.1:40000 > 10.0.0.9:80" in pkts[0]["message"]
    assert direction("a", 1, "b", 2) == 0 and direction("b", 2, "a", 1) == 1
    assert direction("a", 2, "a", 1) == 1 and direction("a", 1, "a", 2) == 0


def test_endpoint_brackets_ipv6_only():
    from pcaptool.record.envelope import endpoint

    assert endpoint("2001:db8::1", 443) == "[2001:db8::1]:443"
    assert endpoint("10.0.0.1", 80) == "10.0.0.1:80"
