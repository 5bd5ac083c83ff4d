"""Network namespaces joined by veth pairs for the capture tests (all names start `ptcap`).

Layout made by `Lab(n_links)`: namespace `cap` (where capture runs) and namespace `peer`,
joined by `n_links` veth pairs named eth0, eth1 ... on both sides; link i carries
10.77.<k+i>.1 (cap side) and 10.77.<k+i>.2 (peer side), and fd77:<k+i>::1 / ::2.
Everything is removed in `close()` (deleting a namespace deletes its veths).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import PCAPTOOL, pcaptool_env

_serial = itertools.count()


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Lab:
    def __init__(self, n_links: int = 1) -> None:
        n = next(_serial)
        tag = f"{os.getpid() % 100000}{n}"
        self.cap = f"ptcap{tag}c"
        self.peer = f"ptcap{tag}p"
        # a /24 per link that no other concurrent Lab uses (pid-derived, 200 slots)
        self.base = (os.getpid() * 7 + n * n_links) % 200 + 20
        self.links = n_links
        self.etc = Path("/etc/netns")
        try:
            sh("ip", "netns", "add", self.cap)
            sh("ip", "netns", "add", self.peer)
            for ns in (self.cap, self.peer):
                sh("ip", "-n", ns, "link", "set", "lo", "up")
            for i in range(n_links):
                a, b = f"ptcap{tag}a{i}"[:15], f"ptcap{tag}b{i}"[:15]
                sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
                sh("ip", "link", "set", a, "netns", self.cap)
                sh("ip", "link", "set", b, "netns", self.peer)
                for ns, dev, host in ((self.cap, a, 1), (self.peer, b, 2)):
                    sh("ip", "-n", ns, "link", "set", dev, "name", f"eth{i}")
                    sh("ip", "-n", ns, "addr", "add", f"{self.addr(i, host)}/24", "dev", f"eth{i}")
                    sh(
                        "ip",
                        "-n",
                        ns,
                        "addr",
                        "add",
                        f"{self.addr6(i, host)}/64",
                        "dev",
                        f"eth{i}",
                        "nodad",
                    )
                    sh("ip", "-n", ns, "link", "set", f"eth{i}", "up")
        except BaseException:
            self.close()
            raise

    def addr(self, link: int, host: int) -> str:
        return f"10.77.{self.base + link}.{host}"

    def addr6(self, link: int, host: int) -> str:
        return f"fd77:{self.base + link}::{host}"

    def hosts_file(self, ns: str) -> Path:
        """/etc/netns/NS/hosts: `ip netns exec` bind-mounts it over /etc/hosts."""
        path = self.etc / ns / "hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        for ns in (self.cap, self.peer):
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(self.etc / ns, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes ------------------------------------------------------------------------

    def exec(self, ns: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, **kw)

    def pcaptool(self, *args: str, **kw) -> subprocess.Popen:
        """Start `pcaptool ARGS` inside the capture namespace."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("env", pcaptool_env())
        return subprocess.Popen(["ip", "netns", "exec", self.cap, *PCAPTOOL, *args], **kw)

    def send_udp(
        self,
        count: int,
        link: int = 0,
        port: int = 9999,
        size: int = 64,
        src_host: int = 2,
        v6: bool = False,
    ) -> None:
        """`count` UDP datagrams from the peer to the capture side of `link`."""
        dst = self.addr6(link, 1) if v6 else self.addr(link, 1)
        src = self.addr6(link, src_host) if v6 else self.addr(link, src_host)
        family = "AF_INET6" if v6 else "AF_INET"
        code = (
            "import socket,time\n"
            f"s=socket.socket(socket.{family},socket.SOCK_DGRAM)\n"
            f"s.bind(({src!r},0))\n"
            f"for i in range({count}):\n"
            f"    s.sendto(b'p'*{size},({dst!r},{port}))\n"
            "    time.sleep(0.0005) if i % 50 == 49 else None\n"
        )
        r = self.exec(self.peer, sys.executable, "-c", code)
        assert r.returncode == 0, r.stderr


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
