"""Network namespaces for the sidecar tests: a veth pair from the root namespace into a
namespace of ours (names start with `ptsc`, removed on exit even when a test fails), and
traffic generators that only talk across it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check)


class VethPair:
    """`ptscXXXXXXh` (root namespace, 10.R.R.1/30) <-> `ptscXXXXXXn` in netns `ptsc-XXXXXX`."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = f"ptsc-{tag}"
        self.host_if = f"ptsc{tag}h"
        self.ns_if = f"ptsc{tag}n"
        octet = 16 + int(tag[:2], 16) % 200
        third = int(tag[2:4], 16)
        self.host_ip = f"10.{octet}.{third}.1"
        self.ns_ip = f"10.{octet}.{third}.2"

    def __enter__(self) -> VethPair:
        try:
            sh("ip", "netns", "add", self.ns)
            sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            sh("ip", "link", "set", self.ns_if, "netns", self.ns)
            sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            sh("ip", "link", "set", self.host_if, "up")
            self.exec("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            self.exec("ip", "link", "set", self.ns_if, "up")
            self.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        sh("ip", "link", "del", self.host_if, check=False)
        sh("ip", "netns", "del", self.ns, check=False)

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *args, check=check)

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *args], **kw)


def send_udp(veth: VethPair, count: int, seconds: float, port: int = 9999) -> int:
    """Send `count` UDP datagrams from the namespace to the root side, spread over `seconds`."""
    code = textwrap.dedent(
        f"""
        import socket, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gap = {seconds} / {count}
        for i in range({count}):
            s.sendto(b"ptsc %06d " % i + b"x" * 64, ("{veth.host_ip}", {port}))
            time.sleep(gap)
        """
    )
    veth.exec(sys.executable, "-c", code)
    return count


HTTP_SERVER = textwrap.dedent(
    """
    import http.server, sys, time
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            if self.path.startswith("/slow"):
                time.sleep(1.3)
            body = b"hello from ptsc\\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
    """
)


def http_requests_with_traceparent(
    veth: VethPair, port: int, count: int, seconds: float
) -> list[str]:
    """GET requests from the root side to an HTTP server in the namespace; returns trace ids.

    Each request carries a W3C `traceparent` header with a fresh trace id. The last one
    asks for `/slow/...`, which the server answers after 1.3 s.
    """
    import http.client
    import time

    server = veth.popen(
        sys.executable, "-c", HTTP_SERVER, veth.ns_ip, str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    trace_ids: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                conn = http.client.HTTPConnection(veth.ns_ip, port, timeout=2)
                conn.connect()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        gap = seconds / count
        for i in range(count):
            trace_id = uuid.uuid4().hex
            span_id = uuid.uuid4().hex[:16]
            conn = http.client.HTTPConnection(veth.ns_ip, port, timeout=5)
            conn.request(
                "GET",
                f"/slow/{i}" if i == count - 1 else f"/ptsc/{i}",
                headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
            )
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 200
            trace_ids.append(trace_id)
            time.sleep(gap)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return trace_ids
