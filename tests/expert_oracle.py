"""tshark's TCP expert analysis as the oracle for ours (test helper)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pcaptool.capfile.reader import CaptureReader, open_input
from pcaptool.errors import CaptureFormatError
from pcaptool.tcp.expertflags import FLAG_NAMES
from pcaptool.translate.serial import Translator

VALUES = (
    "acks_frame",
    "ack_rtt",
    "initial_rtt",
    "bytes_in_flight",
    "push_bytes_sent",
    "duplicate_ack_num",
    "duplicate_ack_frame",
    "rto",
    "rto_frame",
)
TIMES = {"ack_rtt", "initial_rtt", "rto"}
FIELDS = FLAG_NAMES + VALUES


def tshark_analysis(path: Path) -> dict[int, dict[str, str]]:
    """Per frame with a TCP header: tshark's tcp.analysis fields that are present."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    cmd += ["-e", "frame.number", "-e", "tcp.srcport"]
    for f in FIELDS:
        cmd += ["-e", f"tcp.analysis.{f}"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    got = {}
    for line in out.splitlines():
        num, port, *vals = line.split("\t")
        if port:
            got[int(num)] = {f: v for f, v in zip(FIELDS, vals, strict=True) if v}
    return got


def ours_analysis(records) -> dict[int, dict[str, str]]:
    """The same, from our records (tcp.analysis), in tshark's text."""
    got = {}
    for rec in records:
        tcp = rec.get("tcp")
        if "pcap" not in rec or not isinstance(tcp, dict) or "sport" not in tcp:
            continue
        a = tcp.get("analysis") or {}
        row = {name: "1" for name in a.get("flags", ())}
        for f in VALUES:
            if f in a:
                row[f] = str(a[f])
        got[rec["pcap"]["num"]] = row
    return got


def translate(path: Path) -> list[dict]:
    stream = open_input(str(path))
    out: list[dict] = []
    try:
        out.extend(Translator(path.name, None).records(CaptureReader(stream, path.name)))
    except CaptureFormatError:
        pass  # the packets before the break are compared
    finally:
        stream.close()
    return out


def compare(path: Path, records=None) -> list[str]:
    """Every disagreement: flags must be equal, values equal, times within 1 µs.

    Frames where only tshark finds a TCP header (a datagram whose fragments lie more than
    60 s apart, which pcaptool does not reassemble) are left out: docs/expert.md. So are the times of packets whose time stamp lies
    beyond 2^64 ns, which the reader clamps (docs/capfile.md): no RTT can be measured there.
    """
    theirs = tshark_analysis(path)
    records = list(translate(path) if records is None else records)
    ours = ours_analysis(records)
    clamped = {r["pcap"]["num"] for r in records if "pcap" in r and _clamped(r)}
    diffs = []
    for num in sorted(ours):
        t, o = theirs.get(num), ours[num]
        if t is None:
            if o:
                diffs.append(f"#{num}: tshark has no TCP header, ours {o}")
            continue
        for f in FIELDS:
            if f in TIMES and num in clamped:
                continue
            tv, ov = t.get(f), o.get(f)
            near = f in TIMES and tv is not None and ov is not None
            if near and abs(round(float(tv) * 1e9) - int(ov)) <= 1000:
                continue
            if tv != ov:
                diffs.append(f"#{num} {f}: tshark {tv} ours {ov}")
    return diffs


def _clamped(rec: dict) -> bool:
    ts = rec["timestamp"]
    return ts["seconds"] * 1_000_000_000 + ts["nanos"] >= (1 << 64) - 1
