"""HTTP families of `translate` against tshark on every capture of the shared corpus.

Per packet: HTTP/1.x request method and URI, response status and the request it answers
(pairing, tshark's `http.request_in`), and HTTP/2 `:method`/`:path`/`:status` of the header
blocks the packet completes. Ports tshark does not guess are decoded as HTTP or HTTP/2
(`-d tcp.port==P,http2`) where pcaptool found HTTP on them, and tshark's HTTP/2 heuristic
is on. The test prints the agreement of each family and fails on a disagreement that
docs/http.md ("Agreement with tshark") does not list with its reason.

    PCAPTOOL_CORPUS=../shared/corpus pytest -s tests/test_http_agreement.py
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter

import orjson
import pytest

from conftest import CORPUS, REPO, run_pcaptool

FIELDS = (
    "frame.number",
    "tcp.stream",
    "http.request.method",
    "http.request.uri",
    "http.response.code",
    "http.request_in",
    "http2.header.name",
    "http2.header.value",
)
FAMILIES = ("h1.method", "h1.uri", "h1.status", "h1.pairing", "h2.pseudo")
PSEUDO = (":method", ":path", ":status")
SEP = "\x1f"
STANDARD = {80, 8080, 8000, 3128, 3132, 5985, 8088, 11371, 1900, 2869, 2710}
DOC = REPO / "docs" / "http.md"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def corpus_files() -> list[str]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    names = [line.split("\t", 1)[0] for line in manifest.read_text().splitlines()[1:]]
    return [n for n in names if n and (CORPUS / n).exists()]


def _families(method, uri, status, req_in, pseudo) -> dict[str, list[str]]:
    return {
        "h1.method": method,
        "h1.uri": uri,
        "h1.status": status,
        "h1.pairing": req_in,
        "h2.pseudo": pseudo,
    }


def ours(stdout: bytes) -> tuple[dict[int, dict], dict[int, str]]:
    """pcaptool's families per frame, and the server ports where it found HTTP/1 or 2."""
    frames, ports = {}, {}
    for line in stdout.splitlines():
        rec = orjson.loads(line)
        if "pcap" not in rec:
            continue
        method, uri, status, req_in, pseudo = [], [], [], [], []
        h = rec.get("http")
        for m in [h, *h.get("more", [])] if h else []:
            if m.get("version") == "HTTP/2":
                ports.setdefault(_server_port(rec, m), "http2")
                continue
            if m["type"] == "request":
                method.append(m["method"])
                uri.append(m["target"])
                ports[rec.get("tcp", {}).get("dport")] = "http"  # h2c Upgrade: tshark follows it
            elif m["type"] == "response":
                if m["status"] is not None:  # an HTTP/0.9 response has no status line
                    status.append(str(m["status"]))
                if "num" in m.get("request", {}):
                    req_in.append(str(m["request"]["num"]))
        for fr in rec.get("http2", {}).get("frames", []):
            pseudo += [f"{n}={v}" for n, v in fr.get("headers", []) if n in PSEUDO]
        frames[rec["pcap"]["num"]] = _families(method, uri, status, req_in, pseudo)
    ports.pop(None, None)
    return frames, ports


def _server_port(rec: dict, m: dict):
    tcp = rec.get("tcp", {})
    return tcp.get("dport") if m["type"] == "request" else tcp.get("sport")


def theirs(path, ports: dict) -> dict[int, dict]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", f"aggregator={SEP}"]
    cmd += ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "http.desegment_body:TRUE"]
    cmd += ["--enable-heuristic", "http2_tcp"]
    for port, proto in sorted(ports.items()):
        if port not in STANDARD or proto == "http2":
            cmd += ["-d", f"tcp.port=={port},{proto}"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, timeout=300).stdout.decode("utf-8", "replace")
    frames = {}
    for line in out.splitlines():
        cols = [c.split(SEP) if c else [] for c in line.split("\t")]
        cols += [[]] * (len(FIELDS) - len(cols))
        num = int(cols[0][0])
        if not cols[1]:
            continue  # HTTP over UDP (SSDP): translate analyses HTTP over TCP only
        names, values = cols[6], cols[7]
        pseudo = [f"{n}={v}" for n, v in zip(names, values, strict=False) if n in PSEUDO]
        frames[num] = _families(cols[2], cols[3], cols[4], cols[5], pseudo)
    return frames


def documented() -> dict[tuple[str, int, str], str]:
    """(file, frame, family) -> reason, from the disagreement table in docs/http.md."""
    text = DOC.read_text()
    section = text.split("## Agreement with tshark", 1)[-1]
    rows = re.findall(
        r"^\| `([^`]+)` \| (\d+) \| `([a-z0-9.]+)` \|[^|]*\|[^|]*\| (.*) \|$", section, re.M
    )
    return {(f, int(n), fam): why for f, n, fam, why in rows}


def compare(name: str) -> tuple[Counter, Counter, list[tuple[int, str, list, list]]]:
    path = CORPUS / name
    r = run_pcaptool("translate", str(path))
    mine, ports = ours(r.stdout)
    tsh = theirs(path, ports)
    agree, total, diffs = Counter(), Counter(), []
    for num in sorted(set(tsh) | set(mine)):
        t = tsh.get(num) or _families([], [], [], [], [])
        m = mine.get(num) or _families([], [], [], [], [])
        for fam in FAMILIES:
            if not t[fam] and not m[fam]:
                continue
            total[fam] += 1
            if t[fam] == m[fam]:
                agree[fam] += 1
            else:
                diffs.append((num, fam, t[fam], m[fam]))
    return agree, total, diffs


TOTALS: dict[str, Counter] = {"agree": Counter(), "total": Counter(), "not_yet": Counter()}
KNOWN = documented()
FOUND: set[tuple[str, int, str]] = set()  # every disagreement seen, documented or not
COMPARED: set[str] = set()


@pytest.mark.parametrize("name", corpus_files())
def test_http_families_agree_with_tshark(name):
    a, t, diffs = compare(name)
    COMPARED.add(name)
    FOUND.update((name, num, fam) for num, fam, _, _ in diffs)
    TOTALS["agree"].update(a)
    TOTALS["total"].update(t)
    unexplained = []
    for num, fam, ts, mine in diffs:
        why = KNOWN.get((name, num, fam))
        if why is None:
            unexplained.append(f"{name} frame {num} {fam}: tshark {ts} pcaptool {mine}")
        elif why.startswith("Not yet"):
            TOTALS["not_yet"][fam] += 1
    assert not unexplained, "\n".join(unexplained[:40])


def test_print_agreement_per_family():
    """After the per-file comparisons: the agreement of each family over the corpus."""
    if not TOTALS["total"]:
        pytest.skip("no capture compared")
    print()
    for fam in FAMILIES:
        n, ok = TOTALS["total"][fam], TOTALS["agree"][fam]
        pct = 100 * ok / n if n else 100.0
        print(f"{fam:<11} {ok:>6}/{n:<6} {pct:6.2f} %  ({TOTALS['not_yet'][fam]} not yet decoded)")
    assert all(TOTALS["agree"][f] <= TOTALS["total"][f] for f in FAMILIES)
    if set(corpus_files()) == COMPARED:  # the whole corpus ran: the list is exact
        gone = sorted(set(KNOWN) - FOUND)
        assert not gone, f"docs/http.md lists disagreements that no longer occur: {gone}"
