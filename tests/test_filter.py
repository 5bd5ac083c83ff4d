"""The filter builder: the strings it makes, what it refuses, and what the filters keep on
the corpus compared with `tcpdump -r FILE -w - EXPR` (and tshark for the IPv6 flags)."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess

import pytest

from conftest import corpus_files, run_pcaptool
from pcaptool.errors import PcapToolError, UsageError
from pcaptool.sidecar.bpf import FilterBuilder, FilterSettings, is_dns_name

DEFAULT = "(ip or ip6) and (tcp or udp)"
FLAGS_SYN = "(tcp[tcpflags] & (tcp-syn) != 0) or (ip6[6] = 6 and ip6[53] & 0x02 != 0)"

FAKE_DNS = {
    "api.example.test": {"192.0.2.10", "2001:db8::10"},
    "db.example.test": {"192.0.2.20"},
    "moving.example.test": {"198.51.100.1"},
}


def fake_resolver(name: str) -> set:
    if name not in FAKE_DNS:
        raise PcapToolError(f"cannot resolve host {name!r}")
    return {ipaddress.ip_address(a) for a in FAKE_DNS[name]}


def build(**settings) -> str:
    return FilterBuilder(FilterSettings(**settings), resolver=fake_resolver).build()


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({}, DEFAULT),
        ({"l3_protos": "ALL", "l4_protos": "any"}, DEFAULT),
        ({"l3_protos": "ipv6"}, "(ip6) and (tcp or udp)"),
        ({"l3_protos": "0x29,4"}, "(ip or ip6) and (tcp or udp)"),
        ({"l4_protos": "udp"}, "(ip or ip6) and (udp)"),
        ({"l4_protos": "17,6,icmp"}, "(ip or ip6) and (tcp or udp or icmp)"),
        ({"ports": "443,80"}, f"{DEFAULT} and (port 80 or port 443)"),
        ({"ports": "8000-8080,53,53"}, f"{DEFAULT} and (port 53 or portrange 8000-8080)"),
        ({"tcp_flags": "syn"}, f"{DEFAULT} and ({FLAGS_SYN})"),
        (
            {"tcp_flags": "RST,syn,push"},
            f"{DEFAULT} and ((tcp[tcpflags] & (tcp-syn|tcp-rst|tcp-push) != 0)"
            " or (ip6[6] = 6 and ip6[53] & 0x0e != 0))",
        ),
        ({"ipv4": "10.0.0.1"}, f"{DEFAULT} and (host 10.0.0.1)"),
        ({"ipv4": "10.1.2.3/8,10.9.9.9"}, f"{DEFAULT} and (net 10.0.0.0/8)"),
        ({"ipv4": "192.0.2.1/32"}, f"{DEFAULT} and (host 192.0.2.1)"),
        ({"ipv6": "2001:DB8::1,fd00::/8"}, f"{DEFAULT} and (host 2001:db8::1 or net fd00::/8)"),
        ({"hosts": "api.example.test"}, f"{DEFAULT} and (host 192.0.2.10 or host 2001:db8::10)"),
        (
            {"hosts": "db.example.test", "ipv4": "192.0.2.0/24", "ipv6": "::1"},
            f"{DEFAULT} and (host ::1 or net 192.0.2.0/24)",
        ),
        ({"exclude_ports": "22,53"}, f"{DEFAULT} and not (port 22 or port 53)"),
        (
            {"exclude_hosts": "db.example.test", "exclude_ipv6": "fe80::/10"},
            f"{DEFAULT} and not (host 192.0.2.20 or net fe80::/10)",
        ),
        ({"raw_filter": "tcp port 22"}, "(tcp port 22)"),
        ({"raw_filter": "DISABLED", "ports": "80"}, f"{DEFAULT} and (port 80)"),
        (
            {"raw_filter": "icmp", "ports": "80", "exclude_ipv4": "10.0.0.0/8"},
            "(icmp) and not (net 10.0.0.0/8)",
        ),
        (
            {
                "l3_protos": "ipv4",
                "l4_protos": "tcp",
                "hosts": "api.example.test,db.example.test",
                "ports": "443",
                "tcp_flags": "syn,fin",
                "exclude_ports": "8443",
            },
            "(ip) and (tcp) and (host 192.0.2.10 or host 192.0.2.20 or host 2001:db8::10)"
            " and (port 443) and ((tcp[tcpflags] & (tcp-fin|tcp-syn) != 0)"
            " or (ip6[6] = 6 and ip6[53] & 0x03 != 0)) and not (port 8443)",
        ),
    ],
)
def test_expected_expression(settings, expected):
    assert build(**settings) == expected


def test_same_input_same_string_whatever_the_order():
    a = build(hosts="db.example.test,api.example.test", ports="443,80", tcp_flags="ack,syn")
    b = build(hosts="api.example.test,db.example.test", ports="80,443", tcp_flags="syn,ack")
    assert a == b


@pytest.mark.parametrize(
    "settings",
    [
        {"hosts": "example.com or port 22"},
        {"hosts": "example.com) or (tcp"},
        {"hosts": "exa mple.com"},
        {"hosts": "-bad.example.com"},
        {"hosts": "a" * 64 + ".com"},
        {"hosts": "999.1.1.1"},
        {"exclude_hosts": "x.com and not port 1"},
        {"ports": "0"},
        {"ports": "65536"},
        {"ports": "22 or 23"},
        {"ports": "80-20"},
        {"ports": "ALL,80"},
        {"exclude_ports": "-1"},
        {"ipv4": "10.0.0.0/33"},
        {"ipv4": "::1"},
        {"ipv4": "10.0.0.1 or host 1.2.3.4"},
        {"ipv6": "10.0.0.1"},
        {"exclude_ipv6": "fe80::/129"},
        {"tcp_flags": "syn,bogus"},
        {"tcp_flags": "syn|rst"},
        {"l3_protos": "ip or arp"},
        {"l4_protos": "sctp"},
    ],
)
def test_injection_and_bad_values_refused(settings):
    with pytest.raises(UsageError):
        build(**settings)


def test_refused_on_the_command_line_with_one_line():
    r = run_pcaptool("capture", "--print-filter", "--hosts", "example.com or port 22")
    assert r.returncode == 2
    assert r.stdout == b""
    assert r.stderr.decode() == (
        "pcaptool: error: PCAP_HOSTS: 'example.com or port 22' is not a valid host name\n"
    )


def test_env_settings_reach_the_builder():
    from conftest import pcaptool_env

    env = {**pcaptool_env(), "PCAP_PORTS": "443", "PCAP_L4_PROTOS": "tcp", "PCAP_TCP_FLAGS": "syn"}
    r = run_pcaptool("capture", "--print-filter", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == f"(ip or ip6) and (tcp) and (port 443) and ({FLAGS_SYN})\n"


def test_dns_name_rules():
    assert is_dns_name("metadata.google.internal")
    assert is_dns_name("a-b.c.")
    assert not is_dns_name("a_b.com")
    assert not is_dns_name("")
    assert not is_dns_name("x" * 250 + ".com")


def test_refresh_reports_only_changes():
    builder = FilterBuilder(FilterSettings(hosts="moving.example.test"), resolver=fake_resolver)
    assert builder.build().endswith("(host 198.51.100.1)")
    assert builder.refresh() is None
    FAKE_DNS["moving.example.test"] = {"198.51.100.2"}
    try:
        assert builder.refresh().endswith("(host 198.51.100.2)")
        assert builder.refresh() is None
    finally:
        FAKE_DNS["moving.example.test"] = {"198.51.100.1"}


def test_unresolvable_host_is_an_error():
    with pytest.raises(PcapToolError, match="cannot resolve"):
        build(hosts="nowhere.example.test")


# -- against tcpdump on the corpus ----------------------------------------------------------

CORPUS_FILTERS = {
    "default": {},
    "ipv6": {"l3_protos": "ipv6"},
    "udp": {"l4_protos": "udp"},
    "icmp": {"l4_protos": "icmp,icmp6"},
    "web": {"ports": "80,443,8080"},
    "range": {"ports": "1-1024"},
    "syn": {"tcp_flags": "syn"},
    "fin-rst": {"tcp_flags": "fin,rst"},
    "ack-v6": {"l3_protos": "ipv6", "tcp_flags": "ack"},
    "net4": {"ipv4": "192.168.0.0/16,10.0.0.0/8"},
    "net6": {"ipv6": "2001::/16,fe80::/10"},
    "not-dns": {"exclude_ports": "53", "l4_protos": "udp,tcp,icmp"},
    "not-lan": {"exclude_ipv4": "192.168.0.0/16", "exclude_ipv6": "fe80::/10"},
    "combo": {
        "l4_protos": "tcp",
        "ports": "80",
        "tcp_flags": "syn,fin",
        "exclude_ipv4": "10.0.0.0/8",
    },
}


def _pcapy_readable() -> list:
    # libpcap 1.9.1 (bundled by pcapy-ng) reads pcap and pcapng, not gzip.
    return [p for p in corpus_files() if not p.name.endswith(".gz")]


# libpcap compiles `ip6` on the BSD loopback link types for a savefile differently from a
# live capture: the AF_ value is host-defined (AF_INET6 is 24, 28 or 30 on the BSDs and
# macOS, 10 on Linux), so a program compiled for a file (tcpdump -r, an offline handle's
# setfilter) tests all three BSD values, while one compiled without a file (pcapy.compile,
# compat mode's route, meant for a live capture here) tests only this platform's value.
# See gen_linktype() in libpcap's gencode.c (ETHERTYPE_IPV6 under DLT_NULL/LOOP/ENC).
BSD_LOOPBACK_LINKTYPES = {0, 108, 109}  # DLT_NULL, DLT_LOOP, DLT_ENC


def _all_packets(path) -> list:
    """(ts, data) of every packet pcapy reads, up to a truncation (where tcpdump stops too)."""
    import pcapy

    reader = pcapy.open_offline(str(path))
    packets = []
    while True:
        try:
            hdr, data = reader.next()
        except pcapy.PcapError:
            return packets
        if hdr is None:
            return packets
        packets.append((hdr.getts(), data))


def _kept_by_pcaptool(path, expression):
    """(packet number, ts, data) of every packet the filter keeps, compiled for this file.

    The offline handle's own setfilter compiles as `tcpdump -r` does (savefile rules);
    its kept packets are numbered by finding them, in order, among all the file's packets
    (a filter is a function of the bytes, so equal packets are kept alike)."""
    import pcapy

    reader = pcapy.open_offline(str(path))
    try:
        reader.setfilter(expression)
    except pcapy.PcapError as exc:
        # e.g. `ip6` on a raw-IPv4 link type: libpcap proves nothing can match
        assert "rejects all packets" in str(exc)
        return []
    kept = []
    everything = iter(enumerate(_all_packets(path), 1))
    while True:
        try:
            hdr, data = reader.next()
        except pcapy.PcapError:
            break  # a truncated file: tcpdump stops at the same record
        if hdr is None:
            break
        wanted = (hdr.getts(), data)
        number = next(n for n, packet in everything if packet == wanted)
        kept.append((number, *wanted))
    return kept


def _linktype(path) -> int:
    import pcapy

    return pcapy.open_offline(str(path)).datalink()


def _kept_by_compat_route(path, expression) -> list:
    """(ts, data) kept by a program compiled without a handle, as compat mode does."""
    import pcapy

    try:
        program = pcapy.compile(_linktype(path), 262144, expression, 1, 0)
    except pcapy.PcapError as exc:
        assert "rejects all packets" in str(exc)
        return []
    return [(ts, data) for ts, data in _all_packets(path) if program.filter(data)]


def _kept_by_tcpdump(path, expression, tmp_path):
    out = tmp_path / "tcpdump.pcap"
    r = subprocess.run(
        ["tcpdump", "-r", str(path), "-w", str(out), expression], capture_output=True, text=True
    )
    if "rejects all packets" in r.stderr:
        return [], ""
    if r.returncode != 0 and "truncated" not in r.stderr:
        return None, r.stderr
    import pcapy

    reader = pcapy.open_offline(str(out))
    kept = []
    while True:
        hdr, data = reader.next()
        if hdr is None:
            return kept, ""
        kept.append((hdr.getts(), data))


@pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump is the oracle")
@pytest.mark.parametrize("name", sorted(CORPUS_FILTERS))
def test_filters_keep_what_tcpdump_keeps_on_the_corpus(name, corpus, tmp_path):
    expression = build(**CORPUS_FILTERS[name])
    compared = kept_total = 0
    for path in _pcapy_readable():
        ours = _kept_by_pcaptool(path, expression)
        theirs, why = _kept_by_tcpdump(path, expression, tmp_path)
        if theirs is None:
            continue  # tcpdump cannot read it either (e.g. a link type it refuses)
        ours = [(ts, data) for _, ts, data in ours]
        assert ours == theirs, f"{path.name}: {expression}"
        compared += 1
        kept_total += len(ours)
        compat = _kept_by_compat_route(path, expression)
        if _linktype(path) in BSD_LOOPBACK_LINKTYPES:
            # live rules: this platform's AF_INET6 only, so at most what the file rules keep
            assert set(compat) <= set(ours), path.name
        else:
            assert compat == ours, path.name
    assert compared >= 30
    assert kept_total > 0 or name in ("net6",)


@pytest.mark.skipif(not shutil.which("tcpdump"), reason="tcpdump is the oracle")
@pytest.mark.parametrize("family", [24, 28, 30, 10])
def test_bsd_loopback_ipv6_kept_like_tcpdump_whatever_the_af_value(family, tmp_path):
    """A DLT_NULL capture of IPv6 (AF_INET6 as NetBSD, FreeBSD, macOS or Linux number it)."""
    import struct

    import dpkt

    tcp = dpkt.tcp.TCP(sport=50051, dport=40000, flags=dpkt.tcp.TH_ACK, off=5)
    ip6 = dpkt.ip6.IP6(src=b"\0" * 15 + b"\1", dst=b"\0" * 15 + b"\1", nxt=6, hlim=64)
    ip6.data, ip6.plen = tcp, len(bytes(tcp))
    frame = struct.pack("<I", family) + bytes(ip6)
    path = tmp_path / "null.pcap"
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 0))  # DLT_NULL
        f.write(struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    expression = build(**CORPUS_FILTERS["ack-v6"])
    theirs, _ = _kept_by_tcpdump(path, expression, tmp_path)
    ours = [(ts, data) for _, ts, data in _kept_by_pcaptool(path, expression)]
    # a file's rules: the three BSD values (Linux's 10 is no DLT_NULL file's IPv6)
    assert ours == theirs == ([((1, 0), frame)] if family != 10 else [])
    # compat's live-capture program knows this platform's AF_INET6 only
    live = [((1, 0), frame)] if family == socket.AF_INET6 else []
    assert _kept_by_compat_route(path, expression) == live


# one IPv6 header, directly followed by TCP (no extension headers, no IPv4 inside)
V6_TCP_NO_EXT = "ipv6 && count(ipv6.nxt) == 1 && ipv6.nxt == 6 && !ip"


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is the IPv6 oracle")
@pytest.mark.parametrize("flags, mask", [("syn", 0x02), ("fin,rst", 0x05), ("ack", 0x10)])
def test_ipv6_tcp_flags_match_tshark(flags, mask, corpus):
    """Independent of libpcap: tshark's dissector says which IPv6 TCP segments carry a flag."""
    expression = build(l3_protos="ipv6", l4_protos="tcp", tcp_flags=flags)
    checked = 0
    for path in _pcapy_readable():
        if not _kept_by_pcaptool(path, "ip6 and tcp"):
            continue  # nothing for tshark to check here
        r = subprocess.run(
            [
                "tshark",
                "-r",
                str(path),
                "-Y",
                f"{V6_TCP_NO_EXT} && tcp.flags & 0x{mask:02x}",
                "-T",
                "fields",
                "-e",
                "frame.number",
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            continue
        expected = [int(n) for n in r.stdout.split()]
        ours = [n for n, _, _ in _kept_by_pcaptool(path, expression)]
        assert ours == expected, path.name
        checked += len(expected)
    assert checked > 0


def test_docs_examples_are_what_the_command_prints():
    """docs/capture.md's `$ pcaptool capture --print-filter ...` examples, run for real."""
    import shlex

    from conftest import REPO

    lines = (REPO / "docs" / "capture.md").read_text().splitlines()
    examples = [
        (line[2:], lines[i + 1])
        for i, line in enumerate(lines)
        if line.startswith("$ pcaptool capture --print-filter")
    ]
    assert len(examples) >= 8
    for command, expected in examples:
        r = run_pcaptool(*shlex.split(command)[1:])
        assert r.returncode == 0, (command, r.stderr)
        assert r.stdout.decode().strip() == expected, command


# -- long lists (issue 13): merged, built in linear time, bounded when compiled --------


def _print_filter(**env_settings: str):
    import time

    from conftest import pcaptool_env

    t0 = time.monotonic()
    r = run_pcaptool("capture", "--print-filter", env={**pcaptool_env(), **env_settings})
    return r, time.monotonic() - t0


def test_thousands_of_contiguous_ports_become_one_portrange():
    ports = ",".join(str(p) for p in range(1, 20000))
    r, _ = _print_filter(PCAP_PORTS=ports)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "(ip or ip6) and (tcp or udp) and (portrange 1-19999)\n"


def test_touching_and_overlapping_ports_merge():
    assert build(ports="80,81,82,90-95,93-99,100,443") == (
        "(ip or ip6) and (tcp or udp) and (portrange 80-82 or portrange 90-100 or port 443)"
    )


def test_a_thousand_separate_ports_are_refused_at_once_naming_the_setting():
    ports = ",".join(str(p) for p in range(2, 2002, 2))
    r, seconds = _print_filter(PCAP_PORTS=ports)
    assert r.returncode == 2
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pcaptool: error: PCAP_PORTS: 1000 separate")
    assert seconds < 10  # was 99.5 s and 433 MB


def test_many_separate_ports_within_the_bound_compile_under_the_kernel_limit():
    import pcapy

    from pcaptool.sidecar.bpf import BPF_MAXINSNS, MAX_PORT_TERMS

    expression = build(ports=",".join(str(p) for p in range(2, 2 + 2 * MAX_PORT_TERMS, 2)))
    assert expression.count("port ") == MAX_PORT_TERMS
    program = pcapy.compile(1, 65536, expression, 1, 0xFFFFFFFF)
    assert len(program.get_bpf()) <= BPF_MAXINSNS


def test_four_thousand_neighbouring_addresses_become_networks():
    base = int(ipaddress.IPv4Address("10.1.0.0"))
    addrs = ",".join(str(ipaddress.IPv4Address(base + i)) for i in range(4000))
    r, seconds = _print_filter(PCAP_IPV4=addrs)
    assert r.returncode == 0, r.stderr
    nets = r.stdout.decode().split("and (")[-1].rstrip(")\n").split(" or ")
    covered = {a for n in nets for a in ipaddress.ip_network(n.split()[-1])}
    assert covered == {ipaddress.IPv4Address(base + i) for i in range(4000)}
    assert seconds < 10


def test_four_thousand_scattered_addresses_are_refused_at_once():
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    addrs = ",".join(str(ipaddress.IPv4Address(base + 2 * i)) for i in range(4000))
    r, seconds = _print_filter(PCAP_IPV4=addrs)
    assert r.returncode == 2
    assert r.stderr.decode().count("\n") == 1 and "PCAP_IPV4" in r.stderr.decode()
    assert seconds < 10


def test_merged_networks_cover_exactly_the_given_addresses():
    import random

    from pcaptool.sidecar.bpf import merge_networks

    rng = random.Random(13)
    for _ in range(50):
        addrs = [ipaddress.IPv4Address(rng.randrange(256)) for _ in range(rng.randrange(1, 60))]
        nets = [ipaddress.IPv4Network((rng.randrange(256) & ~3, 30)) for _ in range(3)]
        want = set(addrs) | {a for n in nets for a in n}
        merged = merge_networks(addrs, nets)
        got = [a for n in merged for a in n]
        assert len(got) == len(set(got)) and set(got) == want


@pytest.mark.parametrize(
    ("l3", "expected"),
    [
        ("arp", "(arp)"),
        ("ipv4,arp", "(arp or ((ip) and (tcp or udp) and (port 80)))"),
        ("0x0806,ipv6", "(arp or ((ip6) and (tcp or udp) and (port 80)))"),
    ],
)
def test_arp_is_captured_beside_the_ip_clauses(l3, expected):
    expr = FilterBuilder(FilterSettings(l3_protos=l3, ports="80")).build()
    assert expr == expected
    # what libpcap makes of it: an ARP frame and a TCP/80 segment pass, TCP/22 does not
    import pcapy
    from packets import arp, eth, ip4, tcp

    prog = pcapy.compile(1, 65535, expr, 1, 0xFFFFFFFF)
    assert prog.filter(eth(arp(), 0x0806)) > 0
    assert (prog.filter(eth(ip4(tcp(1234, 80), 6))) > 0) == ("ipv6" not in l3 and l3 != "arp")
    assert prog.filter(eth(ip4(tcp(1234, 22), 6))) == 0


def test_l3_default_stays_ip_and_ip6():
    assert FilterBuilder(FilterSettings(l3_protos="ALL")).build() == DEFAULT
    with pytest.raises(UsageError, match="use ipv4, ipv6, arp or ALL"):
        FilterBuilder(FilterSettings(l3_protos="ipx"))
