"""Compare pcaptool's HTTP/HTTP2 keys with tshark's fields, frame by frame (test helper)."""

from __future__ import annotations

import subprocess

import orjson

FIELDS = (
    "frame.number",
    "http.request.method",
    "http.request.uri",
    "http.response.code",
    "http.request_in",
    "http2.streamid",
    "http2.header.name",
    "http2.header.value",
)
SEP = "\x1f"


def tshark_fields(path, decode_as: list[str] = ()) -> dict[int, dict[str, list[str]]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", f"aggregator={SEP}"]
    cmd += ["-o", "tcp.desegment_tcp_streams:TRUE", "-o", "http.desegment_body:TRUE"]
    for d in decode_as:
        cmd += ["-d", d]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode()
    frames = {}
    for line in out.splitlines():
        cols = line.split("\t")
        cols += [""] * (len(FIELDS) - len(cols))
        num = int(cols[0])
        frames[num] = {
            f: (c.split(SEP) if c else [])
            for f, c in zip(FIELDS[1:], cols[1 : len(FIELDS)], strict=True)
        }
    return frames


def ours(stdout: bytes) -> dict[int, dict[str, list[str]]]:
    frames = {}
    for line in stdout.splitlines():
        rec = orjson.loads(line)
        if "pcap" not in rec:
            continue
        got = {f: [] for f in FIELDS[1:]}
        h = rec.get("http")
        for m in [h, *h.get("more", [])] if h else []:
            if m.get("version") == "HTTP/2":
                continue
            if m["type"] == "request":
                got["http.request.method"].append(m["method"])
                got["http.request.uri"].append(m["target"])
            elif m["type"] == "response":
                if m["status"] is not None:  # an HTTP/0.9 response has no status line
                    got["http.response.code"].append(str(m["status"]))
                if "num" in m.get("request", {}):
                    got["http.request_in"].append(str(m["request"]["num"]))
        for fr in rec.get("http2", {}).get("frames", []):
            if "stream_id" in fr:
                got["http2.streamid"].append(str(fr["stream_id"]))
            for name, value in fr.get("headers", []):
                got["http2.header.name"].append(name)
                got["http2.header.value"].append(value)
        frames[rec["pcap"]["num"]] = got
    return frames


def differences(theirs, mine, fields) -> list[str]:
    out = []
    for num in sorted(theirs):
        for f in fields:
            t = theirs[num][f]
            m = mine.get(num, {}).get(f, [])
            if t != m:
                out.append(f"frame {num} {f}: tshark {t} pcaptool {m}")
    return out
