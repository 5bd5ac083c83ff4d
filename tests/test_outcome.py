"""Connection outcomes (`--flows`), UDP connection records, ICMP errors linked to the
connection they quote, and DNS transactions, on captures built here."""

from __future__ import annotations

import socket
import struct

import dpkt
from test_expert import ACK, FIN, MS, PSH, RST, SYN, Talk

from pcaptool.capfile.reader import LINKTYPE_ETHERNET, CaptureReader, PcapWriter, open_input
from pcaptool.tcp.analyzer import HttpAnalyzer
from pcaptool.translate.serial import Translator

ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"


def records(packets, tmp_path, flows=True):
    path = tmp_path / "c.pcap"
    with path.open("wb") as f:
        w = PcapWriter(f, LINKTYPE_ETHERNET, 262144, nanosecond=True)
        for ts, data in packets:
            w.write(ts, data)
    stream = open_input(str(path))
    try:
        tr = Translator("c.pcap", HttpAnalyzer(flows=flows))
        return list(tr.records(CaptureReader(stream, "c.pcap")))
    finally:
        stream.close()


def conns(recs, proto="tcp"):
    return [r["conn"] for r in recs if r.get("conn", {}).get("proto") == proto]


def test_refused(tmp_path):
    t = Talk()
    t.c(SYN, seq=999, ack=0)
    t.s(RST | ACK, seq=0, ack=1000)
    recs = records(t.packets, tmp_path)
    (c,) = conns(recs)
    assert c["outcome"] == "refused" and c["syn_retries"] == 0
    assert [r for r in recs if "conn" in r][0]["severity"] == "WARNING"


def test_timeout_counts_syn_retries_and_the_wait(tmp_path):
    t = Talk()
    for dt in (0, 1000, 2000):
        t.c(SYN, seq=999, ack=0, dt=dt * MS)
    (c,) = conns(records(t.packets, tmp_path))
    assert c["outcome"] == "timeout" and c["syn_retries"] == 2
    assert c["syn_wait"] == 3000 * MS


def test_reset_by_whom_after_how_many_bytes(tmp_path):
    t = Talk()
    t.handshake(rtt=4 * MS)
    t.c(PSH | ACK, b"a" * 30)
    t.s(PSH | ACK, b"b" * 70)
    t.c(RST | ACK)
    (c,) = conns(records(t.packets, tmp_path))
    assert c["outcome"] == "reset" and c["reset_by"] == "orig"
    assert c["reset_after_bytes"] == 100 and c["handshake_rtt"] == 4 * MS


def test_closed_with_retransmissions_dup_acks_and_zero_window_time(tmp_path):
    t = Talk()
    t.handshake()
    t.c(PSH | ACK, b"x" * 50)
    t.c(PSH | ACK, b"x" * 50, seq=1000, dt=300 * MS)  # retransmitted
    t.s(ACK, win=0)
    t.s(ACK, win=0, dt=500 * MS)
    t.s(ACK, win=1000, dt=250 * MS)
    t.s(FIN | ACK)
    t.c(FIN | ACK)
    t.s(ACK)
    (c,) = conns(records(t.packets, tmp_path))
    assert c["outcome"] == "closed" and c["closed_by"] == "resp"
    assert c["orig"]["retransmitted_segments"] == 1 and c["orig"]["retransmitted_bytes"] == 50
    assert c["resp"]["zero_window_time"] == 750 * MS


def test_ongoing_at_the_end(tmp_path):
    t = Talk()
    t.handshake()
    t.c(PSH | ACK, b"q" * 10)
    (c,) = conns(records(t.packets, tmp_path))
    assert c["outcome"] == "ongoing"


def udp_frame(src, dst, sport, dport, payload):
    u = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return ETH + ip4(src, dst, 17, u)


def ip4(src, dst, proto, body):
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 7, 0, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return hdr + body


def test_udp_connection_record_with_the_icmp_error_that_quotes_it(tmp_path):
    ts = 1_700_000_000_000_000_000
    out = udp_frame("10.0.0.1", "10.0.0.9", 5000, 7000, b"hello")
    back = udp_frame("10.0.0.9", "10.0.0.1", 7000, 5000, b"hi")
    quoted = out[14:42]  # the IP header and UDP header of `out`
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    err = ETH + ip4("10.0.0.9", "10.0.0.1", 1, icmp)
    recs = records([(ts, out), (ts + MS, back), (ts + 2 * MS, err)], tmp_path)
    (c,) = conns(recs, "udp")
    assert c["orig"]["packets"] == 1 and c["orig"]["bytes"] == 5
    assert c["resp"]["packets"] == 1 and c["resp"]["bytes"] == 2
    assert c["icmp"][0]["num"] == 3 and c["icmp"][0]["from"] == "10.0.0.9"
    icmp_rec = [r for r in recs if r.get("pcap", {}).get("num") == 3][0]
    assert icmp_rec["icmp"]["orig"]["flow"] == recs[0]["flow"]["id"]


def dns(qid, name, response=False, rcode=0):
    msg = dpkt.dns.DNS(id=qid, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    if response:
        msg.qr = dpkt.dns.DNS_R
        msg.rcode = rcode
    return bytes(msg)


def test_dns_latency_retry_nxdomain_and_timeout(tmp_path):
    ts = 1_700_000_000_000_000_000
    c, s = "10.0.0.1", "10.0.0.53"
    pkts = [
        (ts, udp_frame(c, s, 4000, 53, dns(1, "a.example"))),
        (ts + 7 * MS, udp_frame(s, c, 53, 4000, dns(1, "a.example", True))),
        (ts + 10 * MS, udp_frame(c, s, 4001, 53, dns(2, "gone.example"))),
        (ts + 1010 * MS, udp_frame(c, s, 4002, 53, dns(3, "gone.example"))),  # a retry
        (ts + 1030 * MS, udp_frame(s, c, 53, 4002, dns(3, "gone.example", True, 3))),
        (ts + 1040 * MS, udp_frame(c, s, 4003, 53, dns(4, "never.example"))),
    ]
    recs = records(pkts, tmp_path, flows=False)
    by = {r["pcap"]["num"]: r for r in recs if "pcap" in r}
    assert by[2]["dns"]["latency"] == 7 * MS and by[2]["dns"]["query"]["num"] == 1
    assert by[4]["dns"]["retry_of"] == 3 and by[4]["dns"]["retries"] == 1
    assert by[5]["severity"] == "WARNING" and by[5]["dns"]["rcode"] == "NXDOMAIN"
    assert by[5]["dns"]["retry_of"] == 3
    timeouts = [r for r in recs if r.get("dns", {}).get("outcome") == "timeout"]
    assert [t["dns"]["query"]["num"] for t in timeouts] == [3, 6]  # the first try, the last
    assert all(t["severity"] == "WARNING" for t in timeouts)
