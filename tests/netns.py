"""Network namespaces for the capture and sidecar tests: one helper for both layouts.

`Lab(n_links)`: namespace `cap` (where capture runs) and namespace `peer`, joined by
`n_links` veth pairs named eth0, eth1 ... on both sides.
`Lab(root=True)`: the capture side is the root namespace (interface `lab.host_if`, for
the sidecar and Docker tests that run there) and the peer a namespace.

Every name starts with `ptcap` plus a random tag; link i carries 10.O2.(O3+i).1 on the
capture side and .2 on the peer side (fd77:O2:O3+i::1 / ::2), O2 and O3 random so labs of
concurrent test runs do not clash. `close()` (or leaving the `with`) removes everything,
also when a test fails.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from conftest import PCAPTOOL, pcaptool_env


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Lab:
    def __init__(self, n_links: int = 1, root: bool = False) -> None:
        tag = uuid.uuid4().hex[:6]
        self.root = root
        self.cap: str | None = None if root else f"ptcap{tag}c"
        self.peer = f"ptcap{tag}p"
        self.links = n_links
        self._o2 = 16 + int(tag[:2], 16) % 200
        self._o3 = int(tag[2:4], 16)
        self._tag = tag
        self.etc = Path("/etc/netns")
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for ns in (self.cap, self.peer):
            if ns is not None:
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "set", "lo", "up")
        for i in range(self.links):
            a, b = f"ptcap{self._tag}a{i}", f"ptcap{self._tag}b{i}"
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", b, "netns", self.peer)
            if self.cap is not None:
                sh("ip", "link", "set", a, "netns", self.cap)
            for ns, dev, host in ((self.cap, a, 1), (self.peer, b, 2)):
                name = self.ifname(i) if ns is None else f"eth{i}"
                ip = ["ip"] if ns is None else ["ip", "-n", ns]
                if name != dev:
                    sh(*ip, "link", "set", dev, "name", name)
                sh(*ip, "addr", "add", f"{self.addr(i, host)}/24", "dev", name)
                sh(*ip, "addr", "add", f"{self.addr6(i, host)}/64", "dev", name, "nodad")
                sh(*ip, "link", "set", name, "up")

    def ifname(self, link: int) -> str:
        """The capture side's interface of `link` (eth0... inside the capture namespace)."""
        return f"ptcap{self._tag}a{link}" if self.root else f"eth{link}"

    @property
    def host_if(self) -> str:
        return self.ifname(0)

    def addr(self, link: int, host: int) -> str:
        return f"10.{self._o2}.{(self._o3 + link) % 256}.{host}"

    def addr6(self, link: int, host: int) -> str:
        return f"fd77:{self._o2:x}:{(self._o3 + link) % 256:x}::{host}"

    def hosts_file(self, ns: str) -> Path:
        """/etc/netns/NS/hosts: `ip netns exec` bind-mounts it over /etc/hosts."""
        path = self.etc / ns / "hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        if self.root:
            for i in range(self.links):
                sh("ip", "link", "del", self.ifname(i), check=False)
        for ns in (self.cap, self.peer):
            if ns is not None:
                sh("ip", "netns", "del", ns, check=False)
                shutil.rmtree(self.etc / ns, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes ------------------------------------------------------------------------

    def _argv(self, ns: str | None, args: tuple[str, ...]) -> list[str]:
        return list(args) if ns is None else ["ip", "netns", "exec", ns, *args]

    def exec(self, ns: str | None, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run ARGS in namespace `ns` (None: the root namespace)."""
        return subprocess.run(self._argv(ns, args), capture_output=True, **kw)

    def popen(self, ns: str | None, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(self._argv(ns, args), **kw)

    def pcaptool(self, *args: str, **kw) -> subprocess.Popen:
        """Start `pcaptool ARGS` on the capture side."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("env", pcaptool_env())
        return self.popen(self.cap, *PCAPTOOL, *args, **kw)

    def send_udp(
        self,
        count: int,
        link: int = 0,
        port: int = 9999,
        size: int = 64,
        src_host: int = 2,
        v6: bool = False,
        seconds: float = 0.0,
    ) -> int:
        """`count` UDP datagrams from the peer to the capture side of `link`, spread over
        `seconds` (0: as fast as the peer sends, a short pause every 50)."""
        dst = self.addr6(link, 1) if v6 else self.addr(link, 1)
        src = self.addr6(link, src_host) if v6 else self.addr(link, src_host)
        family = "AF_INET6" if v6 else "AF_INET"
        pause = (
            f"time.sleep({seconds / count})" if seconds else "i % 50 == 49 and time.sleep(0.0005)"
        )
        code = (
            "import socket,time\n"
            f"s=socket.socket(socket.{family},socket.SOCK_DGRAM)\n"
            f"s.bind(({src!r},0))\n"
            f"for i in range({count}):\n"
            f"    s.sendto(b'p'*{size},({dst!r},{port}))\n"
            f"    {pause}\n"
        )
        r = self.exec(self.peer, sys.executable, "-c", code)
        assert r.returncode == 0, r.stderr
        return count


HTTP_SERVER = textwrap.dedent(
    """
    import http.server, sys, time
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            if self.path.startswith("/slow"):
                time.sleep(1.3)
            body = b"hello from ptcap\\n"
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


def http_requests_with_traceparent(lab: Lab, port: int, count: int, seconds: float) -> list[str]:
    """GET requests from the capture side to an HTTP server on the peer; returns trace ids.

    Each request carries a W3C `traceparent` header with a fresh trace id. The last one
    asks for `/slow/...`, which the server answers after 1.3 s. Needs `Lab(root=True)`:
    the client is this process.
    """
    assert lab.root, "http_requests_with_traceparent runs its client in the root namespace"
    server_ip = lab.addr(0, 2)
    server = lab.popen(
        lab.peer, sys.executable, "-c", HTTP_SERVER, server_ip, str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    trace_ids: list[str] = []
    try:
        wait_for(lambda: _accepts(server_ip, port), timeout=10)
        for i in range(count):
            trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
            conn = http.client.HTTPConnection(server_ip, port, timeout=5)
            path = f"/slow/{i}" if i == count - 1 else f"/ptcap/{i}"
            conn.request("GET", path, headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 200
            trace_ids.append(trace_id)
            time.sleep(seconds / count)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return trace_ids


def _accepts(host: str, port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        conn.connect()
        conn.close()
        return True
    except OSError:
        return False


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15):
    """Signal the capture (ip netns exec execs it, so the pid is pcaptool's) and collect it."""
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def stats_line(stderr: bytes) -> dict:
    """The last JSON line on stderr: capture's final statistics."""
    lines = [ln for ln in stderr.decode().splitlines() if ln.startswith("{")]
    assert lines, stderr
    return json.loads(lines[-1])


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines()]
