"""translate beside tshark on every corpus file, family by family, frame by frame.

Each `Family` names the tshark fields it reads (`-T fields`, every occurrence) and says
how to get the same value from tshark's row and from our record; a frame where either
side has a value is compared. Per-family agreement is printed. Every disagreement must be
listed in docs/agreement.md (file, frame, family, what tshark says, what pcaptool says,
why), and every listed one must still occur: the test allows exactly the documented ones.

To add a family (HTTP, HTTP/2, ...), append a Family to FAMILIES.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import pcaptool
from conftest import REPO, corpus_files

DOC = REPO / "docs" / "agreement.md"
Value = str | None


@dataclass(frozen=True)
class Family:
    name: str
    fields: tuple[str, ...]
    theirs: Callable[[dict[str, list[str]]], Value]
    ours: Callable[[dict], Value]


def _join(values) -> Value:
    values = [str(v) for v in values if v not in (None, "")]
    return ",".join(values) or None


def _ips(rec: dict, version: int) -> Value:
    """Every IP header of the given version, outermost first (tunnels, then the packet,
    then the header an ICMP error quotes), as tshark lists ip.src occurrences."""
    layers = [e for e in rec.get("encap", ()) if e["type"] == f"ipv{version}"]
    if rec.get("ip", {}).get("version") == version:
        layers.append(rec["ip"])
    orig = rec.get("icmp", {}).get("orig")
    if orig and orig["version"] == version:
        layers.append(orig)
    return _join(f"{ip['src']}>{ip['dst']}" for ip in layers)


def _their_ips(row: dict, v: str) -> Value:
    return _join(f"{s}>{d}" for s, d in zip(row[f"{v}.src"], row[f"{v}.dst"], strict=False))


def _ports(rec: dict, proto: str) -> Value:
    pairs = [(e["sport"], e["dport"]) for e in rec.get("encap", ()) if e["type"] == proto]
    if proto in rec:
        pairs.append((rec[proto]["sport"], rec[proto]["dport"]))
    orig = rec.get("icmp", {}).get("orig")
    if orig and "sport" in orig and orig["proto"] == (6 if proto == "tcp" else 17):
        pairs.append((orig["sport"], orig["dport"]))
    return _join(f"{s}>{d}" for s, d in pairs)


def _their_ports(row: dict, proto: str) -> Value:
    pairs = zip(row[f"{proto}.srcport"], row[f"{proto}.dstport"], strict=False)
    return _join(f"{s}>{d}" for s, d in pairs)


def _icmp(rec: dict, version: int) -> Value:
    icmp = rec.get("icmp")
    if icmp and icmp["version"] == version:
        return f"{icmp['type']}/{icmp['code']}"
    return None


def _their_icmp(row: dict, p: str) -> Value:
    if not row[f"{p}.type"]:
        return None
    code = row[f"{p}.code"][0] if row[f"{p}.code"] else "?"
    return f"{row[f'{p}.type'][0]}/{code}"


def _arp(rec: dict) -> Value:
    a = rec.get("arp")
    if a is None:
        return None
    return f"{a['op']} {a.get('sender_ip', '')}>{a.get('target_ip', '')}"


def _their_arp(row: dict) -> Value:
    if not row["arp.opcode"]:
        return None
    src = (row["arp.src.proto_ipv4"] or [""])[0]
    dst = (row["arp.dst.proto_ipv4"] or [""])[0]
    return f"{row['arp.opcode'][0]} {src}>{dst}"


def _vlans(rec: dict) -> Value:
    ids = list(rec.get("l2", {}).get("vlan", ()))
    for e in rec.get("encap", ()):
        ids += e.get("vlan", ()) if e["type"] == "ethernet" else ()
    return _join(ids)


def _name(name: str) -> str:
    return "<Root>" if name in (".", "") else name


def _dns_of(rec: dict) -> dict | None:
    """The packet's DNS, or the one an ICMP error quotes (tshark's dns.* fields have both)."""
    return rec.get("dns") or rec.get("icmp", {}).get("orig", {}).get("dns")


def _dns(rec: dict) -> Value:
    d = _dns_of(rec)
    if d is None:
        return None
    q = _name(d["questions"][0]["name"]) if d["questions"] else ""
    return f"0x{d['id']:04x} {'1' if d['qr'] == 'response' else '0'} {q}"


def _their_dns(row: dict) -> Value:
    if not row["dns.id"]:
        return None
    q = row["dns.qry.name"][0] if row["dns.qry.name"] else ""
    return f"{row['dns.id'][0]} {row['dns.flags.response'][0]} {q}"


def _dns_answers(rec: dict) -> Value:
    """The addresses in every section, with the number of answers the header counts."""
    d = _dns_of(rec)
    if d is None or d["qr"] != "response":
        return None
    rrs = d["answers"] + d.get("authority_records", []) + d.get("additional_records", [])
    addrs = sorted(r["data"] for r in rrs if r["type"] in ("A", "AAAA"))
    return f"{d.get('answer_count', len(d['answers']))}: {_join(addrs) or '-'}"


def _their_dns_answers(row: dict) -> Value:
    if not row["dns.id"] or row["dns.flags.response"][:1] != ["1"]:
        return None
    count = row["dns.count.answers"][0] if row["dns.count.answers"] else "?"
    return f"{count}: {_join(sorted(row['dns.a'] + row['dns.aaaa'])) or '-'}"


def _sni(rec: dict) -> Value:
    return rec.get("tls", {}).get("sni")


FAMILIES: list[Family] = [
    Family("ipv4", ("ip.src", "ip.dst"), lambda r: _their_ips(r, "ip"), lambda x: _ips(x, 4)),
    Family("ipv6", ("ipv6.src", "ipv6.dst"), lambda r: _their_ips(r, "ipv6"), lambda x: _ips(x, 6)),
    Family(
        "tcp ports",
        ("tcp.srcport", "tcp.dstport"),
        lambda r: _their_ports(r, "tcp"),
        lambda x: _ports(x, "tcp"),
    ),
    Family(
        "udp ports",
        ("udp.srcport", "udp.dstport"),
        lambda r: _their_ports(r, "udp"),
        lambda x: _ports(x, "udp"),
    ),
    Family(
        "icmp", ("icmp.type", "icmp.code"), lambda r: _their_icmp(r, "icmp"), lambda x: _icmp(x, 4)
    ),
    Family(
        "icmpv6",
        ("icmpv6.type", "icmpv6.code"),
        lambda r: _their_icmp(r, "icmpv6"),
        lambda x: _icmp(x, 6),
    ),
    Family("arp", ("arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"), _their_arp, _arp),
    Family("vlan", ("vlan.id",), lambda r: _join(r["vlan.id"]), _vlans),
    Family("dns", ("dns.id", "dns.flags.response", "dns.qry.name"), _their_dns, _dns),
    Family(
        "dns answers",
        ("dns.id", "dns.flags.response", "dns.count.answers", "dns.a", "dns.aaaa"),
        _their_dns_answers,
        _dns_answers,
    ),
    Family(
        "tls sni",
        ("tls.handshake.extensions_server_name",),
        lambda r: _join(r["tls.handshake.extensions_server_name"][:1]),
        _sni,
    ),
]
# frame.protocols/interface_id tell pcapng blocks that are not packets (tshark shows a
# Custom Block as a frame of protocol "data" on no interface); they are left out.
FIELDS = tuple(
    dict.fromkeys(
        ["frame.protocols", "frame.interface_id", *(f for fam in FAMILIES for f in fam.fields)]
    )
)


@cache
def tshark(path: Path) -> list[dict[str, list[str]]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t"]
    cmd += ["-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    rows = []
    for line in out.splitlines():
        cells = line.split("\t")
        row = {f: [v for v in c.split(",") if v] for f, c in zip(FIELDS, cells, strict=True)}
        if row["frame.protocols"] == ["data"] and not row["frame.interface_id"]:
            continue
        rows.append(row)
    return rows


def translated(path: Path) -> list[dict]:
    records: list[dict] = []
    with contextlib.suppress(pcaptool.CaptureFormatError):  # a broken file: what came before
        records.extend(r for r in pcaptool.records(path) if "pcap" in r)
    return records


def documented() -> set[tuple[str, str, str, str, str]]:
    """(file, frame, family, tshark, pcaptool) of each row of docs/agreement.md's table."""
    rows = set()
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \| (\d+|-) \| ([^|]+?) \| `([^`]*)` \| `([^`]*)` \|", line)
        if m:
            rows.add(m.groups())
    return rows


def compare(path: Path, stats: dict) -> list[tuple[str, str, str, str, str]]:
    theirs, ours = tshark(path), translated(path)
    found = []
    agree, total = stats.setdefault("frames", [0, 0])
    stats["frames"] = [agree + (len(theirs) == len(ours)), total + 1]
    if len(theirs) != len(ours):
        found.append((path.name, "-", "frames", str(len(theirs)), str(len(ours))))
    for row, rec in zip(theirs, ours, strict=False):
        for fam in FAMILIES:
            t, o = fam.theirs(row), fam.ours(rec)
            if t is None and o is None:
                continue
            counts = stats.setdefault(fam.name, [0, 0])
            counts[1] += 1
            if t == o:
                counts[0] += 1
            else:
                found.append((path.name, str(rec["pcap"]["num"]), fam.name, t or "", o or ""))
    return found


CORPUS = corpus_files()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.skipif(not CORPUS, reason="../shared/corpus is absent")
def test_translate_agrees_with_tshark_on_every_corpus_file() -> None:
    stats: dict[str, list[int]] = {}
    found: set = set()
    for path in CORPUS:
        found.update(compare(path, stats))
    print("\nagreement with tshark, per family (frames: files whose frame counts agree):")
    for name, (agree, total) in stats.items():
        print(f"  {name:<12} {agree:>6} / {total:<6} {100 * agree / max(total, 1):6.2f} %")
    allowed = documented()
    undocumented = sorted(found - allowed)
    gone = sorted(allowed - found)
    assert not undocumented, "disagreements not in docs/agreement.md:\n" + "\n".join(
        f"| `{f}` | {n} | {fam} | `{t}` | `{o}` | ... |" for f, n, fam, t, o in undocumented
    )
    assert not gone, f"docs/agreement.md lists disagreements that no longer occur: {gone}"
