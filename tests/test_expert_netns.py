"""Real kernel TCP in two network namespaces (names start `expert`), captured by tcpdump,
analysed by pcaptool and by tshark: loss (iptables' statistic match), a receiver that
stops reading (zero windows), a refused and a timed-out connect. Equal on every packet."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from expert_oracle import compare, ours_analysis, translate

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not (shutil.which("tshark") and shutil.which("tcpdump") and shutil.which("iptables")),
        reason="needs tshark, tcpdump and iptables",
    ),
]

SERVER = textwrap.dedent(
    """
    import socket, sys, time
    mode, port = sys.argv[1], int(sys.argv[2])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mode == "stall":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind(("0.0.0.0", port)); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    if mode == "stall":
        time.sleep(2.5)  # stop reading: the window closes, the sender probes
    total = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        total += len(b)
    c.sendall(b"done %d" % total)
    c.close()
    """
)
CLIENT = textwrap.dedent(
    """
    import socket, sys
    host, port, size, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    c = socket.socket()
    c.settimeout(timeout)
    try:
        c.connect((host, port))
    except OSError as exc:
        print("connect", type(exc).__name__); sys.exit(0)
    c.sendall(b"x" * size)
    c.shutdown(socket.SHUT_WR)
    print(c.recv(100).decode())
    c.close()
    """
)


class Pair:
    """Namespaces expert<tag>c (client, where tcpdump runs) and expert<tag>s (server)."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}{time.monotonic_ns() % 1000}"
        self.c, self.s = f"expert{tag}c", f"expert{tag}s"
        self.octet = 100 + os.getpid() % 100
        for ns in (self.c, self.s):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        a, b = f"ex{tag}a"[:15], f"ex{tag}b"[:15]
        run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for ns, dev, host in ((self.c, a, 1), (self.s, b, 2)):
            run("ip", "link", "set", dev, "netns", ns)
            run("ip", "-n", ns, "link", "set", dev, "name", "eth0")
            run("ip", "-n", ns, "addr", "add", f"10.{self.octet}.9.{host}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
        self.server_ip = f"10.{self.octet}.9.2"

    def close(self) -> None:
        for ns in (self.c, self.s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def in_ns(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *args]


def run(*args: str) -> None:
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, f"{args}: {r.stderr}"


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def session(pair: Pair, tmp_path: Path, mode: str, port: int, size: int, timeout: float) -> Path:
    """tcpdump in the client namespace around one client run (and a server if `mode`)."""
    path = tmp_path / f"{mode}.pcap"
    dump = subprocess.Popen(
        pair.in_ns(pair.c, "tcpdump", "-i", "eth0", "-s", "0", "-U", "-w", str(path), "tcp"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = None
    try:
        dump.stderr.readline()  # "listening on eth0 ..."
        if mode in ("loss", "stall"):
            server = subprocess.Popen(
                pair.in_ns(pair.s, sys.executable, "-c", SERVER, mode, str(port)),
                stdout=subprocess.PIPE,
                text=True,
            )
            assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(
            pair.in_ns(
                pair.c,
                sys.executable,
                "-c",
                CLIENT,
                pair.server_ip,
                str(port),
                str(size),
                str(timeout),
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.returncode == 0, client.stderr
    finally:
        if server is not None:
            server.wait(timeout=30)
        time.sleep(0.3)
        dump.terminate()
        dump.wait(timeout=10)
    return path


def flags_seen(path: Path) -> set[str]:
    return {f for row in ours_analysis(translate(path)).values() for f in row}


def test_loss_retransmissions_equal_tshark(pair, tmp_path):
    # drop a tenth of the data arriving at the server, and a tenth of its ACKs
    for chain, flag in (("INPUT", "--dport"), ("OUTPUT", "--sport")):
        run(
            *pair.in_ns(pair.s, "iptables", "-A", chain, "-p", "tcp", flag, "5001:5003"),
            *("-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP"),
        )
    # Which flags random loss brings depends on timing (an ACK that also moves the window
    # is a window update, not a duplicate ACK): up to three transfers, each equal to
    # tshark on every packet, until both retransmissions and duplicate ACKs were seen.
    seen: set[str] = set()
    for port in (5001, 5002, 5003):
        (tmp_path / str(port)).mkdir()
        path = session(pair, tmp_path / str(port), "loss", port, 3_000_000, 30)
        assert compare(path) == []
        seen |= flags_seen(path)
        if "retransmission" in seen and "duplicate_ack" in seen:
            break
    assert "retransmission" in seen and "duplicate_ack" in seen, seen


def test_zero_window_equal_tshark(pair, tmp_path):
    path = session(pair, tmp_path, "stall", 5002, 2_000_000, 30)
    assert compare(path) == []
    seen = flags_seen(path)
    assert "zero_window" in seen and "window_update" in seen, seen


def test_refused_and_timed_out_connects_equal_tshark(pair, tmp_path):
    refused = session(pair, tmp_path, "refused", 5003, 0, 5)
    assert compare(refused) == []
    run(
        *pair.in_ns(pair.s, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5004", "-j", "DROP")
    )
    silent = session(pair, tmp_path, "timeout", 5004, 0, 3.5)
    assert compare(silent) == []
    assert "retransmission" in flags_seen(silent)  # the SYN sent again
