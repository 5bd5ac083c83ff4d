"""End to end over loopback: a real server, curl with trace headers, tcpdump -i lo, then
`pcaptool translate`, checked against what curl sent and against tshark."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from http_oracle import FIELDS, differences, ours, tshark_fields

from conftest import needs_root, run_pcaptool

TRACE1 = "0af7651916cd43dd8448eb211c80319c"
TRACE2 = "6e0c63257de34c92bf9efcd03927272e"
T = "logging.googleapis.com/trace"

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        not (shutil.which("tcpdump") and shutil.which("curl")), reason="needs tcpdump and curl"
    ),
]

SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = (self.path * 200).encode()[:3000]
        self.send_response(200 if self.path != "/missing" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        self.send_response(201)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")
    def log_message(self, *a):
        pass

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tcpdump:
    def __init__(self, path: Path, port: int) -> None:
        self.proc = subprocess.Popen(
            [
                "tcpdump",
                "-i",
                "lo",
                "--immediate-mode",
                "-U",
                "-n",
                "-w",
                str(path),
                f"tcp port {port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        line = self.proc.stderr.readline()  # "listening on lo ..." once the filter is set
        assert b"listening" in line, line

    def stop(self) -> None:
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=10)


def wait_port(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def records(path: Path, *args: str) -> list[dict]:
    r = run_pcaptool("translate", *args, str(path))
    assert r.returncode == 0, r.stderr
    return [orjson.loads(x) for x in r.stdout.splitlines()]


def messages(rec):
    h = rec.get("http")
    return [h, *h.get("more", [])] if h else []


def test_http1_keepalive_with_trace_headers(tmp_path):
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline())
        cap = tmp_path / "lo.pcap"
        dump = Tcpdump(cap, port)
        try:
            base = f"http://127.0.0.1:{port}"
            subprocess.run(
                ["curl", "-s", "-o", "/dev/null", f"{base}/first?x=1",
                 "-H", f"traceparent: 00-{TRACE1}-b7ad6b7169203331-01",
                 "--next", "-s", "-o", "/dev/null", "-d", "a=1&b=2", f"{base}/form",
                 "-H", f"X-Cloud-Trace-Context: {TRACE2}/987654321;o=1",
                 "--next", "-s", "-o", "/dev/null", f"{base}/missing"],
                check=True,
                timeout=20,
            )  # fmt: skip
        finally:
            dump.stop()
    finally:
        server.kill()
        server.wait()

    recs = records(cap, "--project", "lo-proj", "--flows")
    pk = [r for r in recs if "pcap" in r]
    reqs = [m for r in pk for m in messages(r) if m["type"] == "request"]
    resps = [(r, m) for r in pk for m in messages(r) if m["type"] == "response"]
    assert [(m["method"], m["target"]) for m in reqs] == [
        ("GET", "/first?x=1"),
        ("POST", "/form"),
        ("GET", "/missing"),
    ]
    assert [m["status"] for _, m in resps] == [200, 201, 404]
    assert resps[1][1]["chunked"] and resps[1][1]["body_sample"] == "hello"
    assert reqs[1]["body_size"] == 7

    # every packet from the first request's headers on carries its trace until the
    # second request starts; then the second's (curl sends each request in one segment)
    first = next(
        i for i, r in enumerate(pk) if messages(r) and messages(r)[0].get("target") == "/first?x=1"
    )
    second = next(
        i for i, r in enumerate(pk) if messages(r) and messages(r)[0].get("target") == "/form"
    )
    third = next(
        i for i, r in enumerate(pk) if messages(r) and messages(r)[0].get("target") == "/missing"
    )
    for r in pk[first:second]:
        assert r[T] == f"projects/lo-proj/traces/{TRACE1}", r["message"]
        assert r["logging.googleapis.com/spanId"] == "b7ad6b7169203331"
    for r in pk[second:third]:
        assert r[T] == f"projects/lo-proj/traces/{TRACE2}", r["message"]
        assert r["logging.googleapis.com/spanId"] == f"{987654321:016x}"
        assert r["logging.googleapis.com/trace_sampled"] is True
    assert all(T not in r for r in pk[:first])
    assert all(T not in r for r in pk[third:])  # the third request has no trace header

    rec, m = resps[0]
    hr = rec["httpRequest"]
    assert hr["requestUrl"] == f"http://127.0.0.1:{port}/first?x=1"
    assert hr["status"] == 200 and hr["protocol"] == "HTTP/1.1"
    assert hr["userAgent"].startswith("curl/")
    assert hr["remoteIp"] == hr["serverIp"] == "127.0.0.1"
    assert hr["responseSize"] == str(m["header_size"] + m["body_size"])
    assert m["latency"] > 0

    (conn,) = [r["conn"] for r in recs if "conn" in r]
    assert conn["resp"]["port"] == port and conn["state"] == "SF"
    assert conn["http_requests"] == 3

    if shutil.which("tshark"):
        r = run_pcaptool("translate", str(cap))
        diffs = differences(
            tshark_fields(cap, [f"tcp.port=={port},http"]), ours(r.stdout), FIELDS[1:]
        )
        assert not diffs, diffs


@pytest.mark.skipif(
    shutil.which("nghttpd") is None or shutil.which("nghttp") is None, reason="needs nghttp2"
)
def test_h2c_prior_knowledge_with_nghttpd(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("hello h2c\n" * 50)
    port = free_port()
    server = subprocess.Popen(
        ["nghttpd", "--no-tls", "-d", str(docroot), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        cap = tmp_path / "h2.pcap"
        dump = Tcpdump(cap, port)
        try:
            base = f"http://127.0.0.1:{port}"
            # two streams on one connection: the second HEADERS block uses the HPACK
            # dynamic table the first one filled
            subprocess.run(
                ["nghttp", "-H", f"traceparent: 00-{TRACE1}-b7ad6b7169203331-01",
                 f"{base}/index.html", f"{base}/nope"],
                check=True, capture_output=True, timeout=20,
            )  # fmt: skip
            subprocess.run(
                ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", f"{base}/index.html",
                 "-H", f"X-Cloud-Trace-Context: {TRACE2}/1;o=0"],
                check=True, timeout=20,
            )  # fmt: skip
        finally:
            dump.stop()
    finally:
        server.kill()
        server.wait()

    recs = records(cap, "--project", "p", "--flows")
    pk = [r for r in recs if "pcap" in r]
    resps = [(r, m) for r in pk for m in messages(r) if m["type"] == "response"]
    assert [(m["version"], m["request"]["target"], m["status"]) for _, m in resps] == [
        ("HTTP/2", "/index.html", 200),
        ("HTTP/2", "/nope", 404),
        ("HTTP/2", "/index.html", 200),
    ]
    assert resps[0][1]["body_size"] == 500
    assert resps[0][0][T] == resps[1][0][T] == f"projects/p/traces/{TRACE1}"
    assert resps[2][0][T] == f"projects/p/traces/{TRACE2}"
    assert resps[2][0]["logging.googleapis.com/spanId"] == "0000000000000001"
    hr = resps[0][0]["httpRequest"]
    assert hr["protocol"] == "HTTP/2" and hr["requestUrl"] == f"http://127.0.0.1:{port}/index.html"
    assert hr["userAgent"].startswith("nghttp2/")
    # every packet of the second connection after its request carries its trace
    second = [r for r in pk if r["flow"]["id"] == resps[2][0]["flow"]["id"]]
    start = next(
        i for i, r in enumerate(second) if messages(r) and messages(r)[0]["type"] == "request"
    )
    assert all(r[T] == f"projects/p/traces/{TRACE2}" for r in second[start:])
    heads = [f for r in pk for f in r.get("http2", {}).get("frames", []) if "headers" in f]
    assert len(heads) == 6 and all("error" not in f for f in heads)
    conns = [r["conn"] for r in recs if "conn" in r]
    assert [c["service"] for c in conns] == ["http2", "http2"]
    if shutil.which("tshark"):
        r = run_pcaptool("translate", str(cap))
        diffs = differences(
            tshark_fields(cap, [f"tcp.port=={port},http2"]), ours(r.stdout), FIELDS[1:]
        )
        assert not diffs, diffs
