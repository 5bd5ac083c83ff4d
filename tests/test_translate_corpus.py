"""Every capture of ../shared/corpus, translated and checked against tshark as the oracle."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, corpus_files, run_pcaptool

SCHEMA = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

# Files the corpus MANIFEST says end in a read error after their good packets.
BROKEN = {"dpkt-truncated-file.pcap", "gopacket-pcapng-bad-shb-version.pcapng"}

FIELDS = (
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "icmp.type",
    "icmpv6.type",
    "arp.opcode",
)

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@cache
def tshark_fields(path: Path, fields: tuple[str, ...]) -> list[dict[str, str]]:
    """tshark's value of each field per frame (first occurrence: the outer header)."""
    cmd = [
        "tshark",
        "-n",
        "-r",
        str(path),
        "-T",
        "fields",
        "-E",
        "occurrence=f",
        "-E",
        "separator=\t",
    ]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in out.splitlines()]


def tshark_rows(path: Path) -> list[dict[str, str]]:
    return tshark_fields(path, FIELDS)


@cache
def translated(path: Path) -> tuple[int, list[dict], str]:
    result = run_pcaptool("translate", str(path))
    return (
        result.returncode,
        [json.loads(line) for line in result.stdout.splitlines()],
        result.stderr.decode(),
    )


def ours(rec: dict) -> dict[str, str]:
    """The record's fields under tshark's names (first occurrence: the outer header)."""
    got: dict[str, str] = {}
    ip = rec.get("ip")
    if ip:
        v = "ip" if ip["version"] == 4 else "ipv6"
        got[f"{v}.src"], got[f"{v}.dst"] = ip["src"], ip["dst"]
    for proto in ("tcp", "udp"):
        if proto in rec:
            got[f"{proto}.srcport"] = str(rec[proto]["sport"])
            got[f"{proto}.dstport"] = str(rec[proto]["dport"])
    icmp = rec.get("icmp")
    if icmp:
        got["icmp.type" if icmp["version"] == 4 else "icmpv6.type"] = str(icmp["type"])
    if "arp" in rec:
        got["arp.opcode"] = str(rec["arp"]["op"])
    return got


CORPUS = corpus_files()
pytestmark = pytest.mark.skipif(
    not CORPUS, reason="../shared/corpus is absent; corpus tests need it"
)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_translates_without_traceback_and_every_record_is_valid(path: Path) -> None:
    code, records, stderr = translated(path)
    assert "Traceback" not in stderr
    if path.name in BROKEN:
        assert code == 1
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("pcaptool: error: ")
    else:
        assert code == 0, stderr
        assert stderr == ""
    for rec in records:
        errors = [e.message for e in VALIDATOR.iter_errors(rec)]
        assert not errors, (rec["pcap"]["num"], errors)
    assert [r["pcap"]["num"] for r in records if "pcap" in r] == list(range(1, len(records) + 1))


@needs_tshark
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_packet_count_equals_tshark(path: Path) -> None:
    _, records, _ = translated(path)
    assert len(records) == len(tshark_rows(path))


@needs_tshark
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_addresses_ports_and_icmp_types_equal_tshark(path: Path) -> None:
    _, records, _ = translated(path)
    mismatches = []
    for rec, theirs in zip(records, tshark_rows(path), strict=True):
        mine = ours(rec)
        for field, value in mine.items():
            if theirs[field] != value:
                mismatches.append((rec["pcap"]["num"], field, value, theirs[field]))
        # What tshark found in the outer headers, we found too (unless we said why not).
        if "error" not in rec:
            for field in ("ip.src", "ipv6.src", "arp.opcode"):
                if theirs[field] and field not in mine:
                    mismatches.append((rec["pcap"]["num"], field, None, theirs[field]))
    assert not mismatches, mismatches[:10]


APP_FIELDS = (
    "dns.id",
    "dns.qry.name",
    "dns.flags.response",
    "tls.handshake.type",
    "tls.handshake.extensions_server_name",
)


@needs_tshark
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_dns_and_tls_hellos_equal_tshark(path: Path) -> None:
    _, records, _ = translated(path)
    packets = [r for r in records if "pcap" in r]  # not the DNS timeout records
    mismatches = []
    for rec, theirs in zip(packets, tshark_fields(path, APP_FIELDS), strict=True):
        num = rec["pcap"]["num"]
        dns = rec.get("dns")
        if dns:
            mine = (
                f"0x{dns['id']:04x}",
                dns["questions"][0]["name"] if dns["questions"] else "",
                "1" if dns["qr"] == "response" else "0",
            )
            if mine != (theirs["dns.id"], theirs["dns.qry.name"], theirs["dns.flags.response"]):
                mismatches.append((num, "dns", mine, theirs))
        elif theirs["dns.id"] and "udp" in rec:
            mismatches.append((num, "dns missing", theirs))
        hello = rec.get("tls", {}).get("handshake")
        spans = sum(5 + r["len"] for r in rec.get("tls", {}).get("records", [])) > rec.get(
            "tcp", {}
        ).get("len", 0)
        if hello in ("ClientHello", "ServerHello") and spans:
            continue  # tshark reports a hello that spans segments at the segment completing it
        if hello in ("ClientHello", "ServerHello"):
            if theirs["tls.handshake.type"] != ("1" if hello == "ClientHello" else "2"):
                mismatches.append((num, "tls", hello, theirs))
            if rec["tls"].get("sni", "") != theirs["tls.handshake.extensions_server_name"]:
                mismatches.append((num, "sni", rec["tls"].get("sni"), theirs))
    assert not mismatches, mismatches[:10]
