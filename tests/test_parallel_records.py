"""`translate --workers N` writes the records of their own the single process writes:
UDP connection records (`--flows`) and DNS timeouts, in the same order with `--ordered`,
each with the run id; on captures built here and on corpus files."""

from __future__ import annotations

import orjson
import pytest
from tcpconv import Capture, Conn
from test_outcome import dns, udp_frame

from conftest import run_pcaptool

S = 1_000_000_000
MS = 1_000_000


def mixed(path, rounds: int = 12):
    """TCP connections, UDP flows and DNS over several minutes of capture time: flows
    that idle out (120 s), queries answered, retried, answered late, never answered."""
    cap = Capture()
    for r in range(rounds):
        c = Conn(cap, client=(f"10.2.0.{r + 1}", 41000 + r), server=("10.0.0.9", 80))
        c.handshake()
        c.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", dt=200 * MS)
        c.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if r % 2:
            c.close()
        for k in range(3):
            cli = f"10.3.{r}.{k + 1}"
            cap.add(udp_frame(cli, "10.0.0.7", 5000 + k, 7000, b"x" * (k + 1)), 300 * MS)
            if k != 1:
                cap.add(udp_frame("10.0.0.7", cli, 7000, 5000 + k, b"yy"), 2 * MS)
            name = f"h{r}-{k}.example"
            qid = r * 10 + k
            cap.add(udp_frame(cli, "10.0.0.53", 3000 + r, 53, dns(qid, name)), 5 * MS)
            if k == 0:  # answered
                cap.add(udp_frame("10.0.0.53", cli, 53, 3000 + r, dns(qid, name, True)), 9 * MS)
            elif k == 1:  # retried, then NXDOMAIN
                cap.add(udp_frame(cli, "10.0.0.53", 3100 + r, 53, dns(qid + 1, name)), S)
                back = dns(qid + 1, name, True, 3)
                cap.add(udp_frame("10.0.0.53", cli, 53, 3100 + r, back), 20 * MS)
        # a response after the timeout, and a long pause: UDP flows idle out
        cap.add(udp_frame("10.0.0.53", f"10.3.{r}.3", 53, 3000 + r, dns(r * 10 + 2, "x")), 6 * S)
        cap.add(udp_frame("10.9.9.9", "10.0.0.7", 9, 9, b"tick"), (130 if r % 4 == 3 else 2) * S)
    return cap.write(path)


def lines(*args: str) -> list[bytes]:
    r = run_pcaptool("translate", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def own(recs: list[bytes]) -> tuple[list[dict], list[dict]]:
    """(UDP connection records, DNS timeout records)."""
    got = [orjson.loads(x) for x in recs]
    udp = [r for r in got if r.get("conn", {}).get("proto") == "udp"]
    late = [r for r in got if r.get("dns", {}).get("outcome") == "timeout"]
    return udp, late


@pytest.mark.parametrize("flows", [True, False])
def test_workers_write_udp_connections_and_dns_timeouts_as_one_process(tmp_path, flows):
    path = str(mixed(tmp_path / "mixed.pcap"))
    args = ("--flows",) if flows else ()
    one = lines(*args, path)
    udp, late = own(one)
    assert bool(udp) == flows
    if flows:
        assert {r["conn"]["end"] for r in udp} == {"timeout", "end"}
    # answered late (no match: a timeout), never answered: mid-capture and at the end
    assert len(late) >= 24 and {r["dns"]["query"]["num"] for r in late}
    for r in udp + late:
        labels = r["logging.googleapis.com/labels"]
        assert labels["run"] == "test-run" and labels["proto"] == "UDP"
    for workers in ("2", "3"):
        assert lines(*args, "--workers", workers, "--ordered", path) == one
    un = lines(*args, "--workers", "2", path)
    assert sorted(un) == sorted(one)


def test_dns_timeout_records_keep_query_order_and_time(tmp_path):
    path = str(mixed(tmp_path / "mixed.pcap", rounds=3))
    _, late = own(lines(path))
    nums = [r["dns"]["query"]["num"] for r in late]
    assert nums == sorted(nums)
    for r in late:  # written when the timeout passed, or at the end of the input
        q = r["dns"]["query"]["ts"]
        ts = r["timestamp"]["seconds"] * S + r["timestamp"]["nanos"]
        assert q < ts <= q + 5 * S


CORPUS = [
    "dpkt-dns_icmp.pcap",
    "zeek-dns-edns-ecs-dnssec-tc.pcap",
    "zeek-icmp-destunreach-udp.pcap",
    "zeek-dns-mdns-ipv6.pcap",
    "sv-dns-tcp-multi-msg-segment.pcap",
]


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_workers_equal_one_process(corpus, name):
    path = str(corpus / name)
    one = lines("--flows", path)
    two = lines("--flows", "--workers", "2", "--ordered", path)
    assert two == one
    assert own(two) == own(one)
    assert sorted(lines("--flows", "--workers", "2", path)) == sorted(one)


def test_dns_timeout_option_and_setting(tmp_path):
    """--dns-timeout (PCAP_DNS_TIMEOUT) decides which answers match and when a query
    times out, the same with workers."""
    cap = Capture()
    c, s = "10.0.0.1", "10.0.0.53"
    cap.add(udp_frame(c, s, 4000, 53, dns(1, "slow.example")), 0)
    cap.add(udp_frame(s, c, 53, 4000, dns(1, "slow.example", True)), 3 * S)  # after 3 s
    cap.add(udp_frame(c, s, 4001, 53, dns(2, "never.example")), 10 * MS)
    cap.add(udp_frame(c, "10.0.0.2", 9, 9, b"later"), 20 * S)
    path = str(cap.write(tmp_path / "slow.pcap"))

    def answered_and_timeouts(*args: str, env=None):
        r = run_pcaptool("translate", *args, path, env=env)
        assert r.returncode == 0, r.stderr
        recs = [orjson.loads(x) for x in r.stdout.splitlines()]
        answered = [r["pcap"]["num"] for r in recs if "latency" in r.get("dns", {})]
        late = [r for r in recs if r.get("dns", {}).get("outcome") == "timeout"]
        return answered, [(t["dns"]["query"]["num"], t["timestamp"]["seconds"]) for t in late]

    t0 = Capture().ts // S
    assert answered_and_timeouts() == ([2], [(3, t0 + 8)])
    assert answered_and_timeouts("--dns-timeout", "2.5") == ([], [(1, t0 + 2), (3, t0 + 5)])
    assert answered_and_timeouts("--dns-timeout", "2.5", "--workers", "2", "--ordered") == (
        [],
        [(1, t0 + 2), (3, t0 + 5)],
    )
    from conftest import pcaptool_env

    env = pcaptool_env()
    env["PCAP_DNS_TIMEOUT"] = "30"
    assert answered_and_timeouts(env=env) == ([2], [(3, t0 + 23)])
    r = run_pcaptool("translate", "--dns-timeout", "0", path)
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1


def test_sidecar_checks_its_dns_timeout_setting(tmp_path):
    from test_entrypoint import run_entrypoint, sidecar_env

    r = run_entrypoint(sidecar_env(tmp_path, PCAP_IFACE="lo", PCAP_DNS_TIMEOUT="soon"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "pcaptool-sidecar: error: PCAP_DNS_TIMEOUT='soon' must be a whole number from 1 to 3600"
    ]
