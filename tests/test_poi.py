"""PCAP-over-IP (`pcaptool stream`, PCAP_POI_TARGET; issue 16, pcap-sidecar #85).

A receiver on loopback (a Python socket server writing each connection to a file) that
tshark and capinfos read back: the stream holds the packets sent when the receiver keeps
up, a counted subset of whole packets when it reads slowly, starts again with a pcap header
after the receiver restarts, and a receiver that never listens never slows the input.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from packets import eth, ip4, udp

from conftest import PCAPTOOL, pcaptool_env, run_pcaptool
from pcaptool.capfile.reader import read_packets
from pcaptool.capfile.writer import PcapWriter
from pcaptool.errors import UsageError
from pcaptool.sidecar.poi import parse_target

T0 = 1_764_000_000_000_000  # µs


def frame(i: int, size: int) -> bytes:
    """Packet number i: its number inside the payload, so every packet is unique."""
    return eth(ip4(udp(40000, 9999, struct.pack("!I", i) + b"x" * size), 17))


def capture_bytes(tmp_path: Path, count: int, size: int = 200) -> bytes:
    path = tmp_path / "in.pcap"
    with open(path, "wb") as f:
        w = PcapWriter(f, 1, nanosecond=False)
        for i in range(count):
            w.write((T0 + i * 1000) * 1000, frame(i, size))
    return path.read_bytes()


def numbers(path: Path) -> list[int]:
    """The packet numbers a received stream holds (and each packet's time stamp checked)."""
    out = []
    for pkt in read_packets(path):
        (i,) = struct.unpack_from("!I", pkt.data, 42)
        assert pkt.ts_ns == (T0 + i * 1000) * 1000 and pkt.data == frame(i, len(pkt.data) - 46)
        out.append(i)
    return out


def tshark_count(path: Path) -> int:
    """Packets tshark reads; any complaint (a cut record, a bad header) fails the test."""
    r = subprocess.run(["tshark", "-r", str(path)], capture_output=True, text=True)
    complaints = [x for x in r.stderr.splitlines() if x.strip() and "Running as user" not in x]
    assert r.returncode == 0 and not complaints, r.stderr
    return len(r.stdout.splitlines())


class Receiver:
    """Accepts connections on 127.0.0.1:port, each written to conn<N>.pcap.

    `chunk`/`delay`: read that many bytes, then sleep (a slow receiver, with a small
    receive buffer); `close_after`: the first connection is closed after that many bytes.
    """

    def __init__(self, tmp: Path, port: int = 0, chunk=1 << 16, delay=0.0, close_after=None):
        self.tmp, self.chunk, self.delay, self.close_after = tmp, chunk, delay, close_after
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if delay:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.files: list[Path] = []
        self.peers: list[int] = []
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            path = self.tmp / f"conn{len(list(self.tmp.glob('conn*.pcap')))}.pcap"
            path.touch()
            self.files.append(path)
            self.peers.append(peer[1])
            t = threading.Thread(target=self._read, args=(conn, path), daemon=True)
            t.start()
            self.threads.append(t)

    def _read(self, conn: socket.socket, path: Path) -> None:
        limit = self.close_after if len(self.files) == 1 else None
        got = 0
        with conn, open(path, "wb") as f:
            while limit is None or got < limit:
                data = conn.recv(self.chunk)
                if not data:
                    break
                f.write(data)
                got += len(data)
                if self.delay:
                    time.sleep(self.delay)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.sock.close()
        self.accepting.join(5)

    def wait(self, timeout: float = 60) -> None:
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "the receiver never saw the end of the stream"


def stream(port: int, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [*PCAPTOOL, "stream", "--to", f"127.0.0.1:{port}", "--self-ports", "61100-61199", *args],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
        **kw,
    )


def logs(stderr: bytes) -> list[dict]:
    return [json.loads(x) for x in stderr.decode().splitlines() if x.startswith("{")]


def summary(lines: list[dict]) -> dict:
    return next(x["poi"] for x in lines if "streamed" in x.get("poi", {}))


def dropped(lines: list[dict]) -> list[dict]:
    return [x["poi_dropped"] for x in lines if "poi_dropped" in x]


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is the oracle")


def test_targets_parse_and_refuse():
    assert parse_target("arkime.internal:57012") == ("arkime.internal", 57012)
    assert parse_target("[fd00::1]:9") == ("fd00::1", 9)
    assert parse_target("") is None and parse_target("DISABLED") is None
    for bad in ("nohost", "host:", ":80", "host:0", "host:70000", "fd00::1:9", "h:8x"):
        with pytest.raises(UsageError, match="PCAP_POI_TARGET"):
            parse_target(bad)


def test_a_bad_target_is_one_line_and_exit_2():
    r = run_pcaptool("stream", "--to", "nowhere", input=b"")
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1, r.stderr


@needs_tshark
def test_the_stream_holds_every_packet_when_the_receiver_keeps_up(tmp_path):
    rx = Receiver(tmp_path)
    data = capture_bytes(tmp_path, 3000)
    proc = stream(rx.port)
    _, err = proc.communicate(data, timeout=60)
    assert proc.returncode == 0, err.decode()
    rx.wait()
    rx.close()
    [conn] = rx.files
    assert numbers(conn) == list(range(3000))
    assert tshark_count(conn) == 3000
    r = subprocess.run(["capinfos", "-M", "-c", "-T", str(conn)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split()[-1] == "3000", r.stdout + r.stderr
    assert 61100 <= rx.peers[0] <= 61199, rx.peers  # from the sidecar's own port range
    s = summary(logs(err))
    assert s == {
        "target": f"127.0.0.1:{rx.port}",
        "streamed": 3000,
        "dropped": 0,
        "connections": 1,
    }


@needs_tshark
def test_a_slow_receiver_gets_a_counted_subset_of_whole_packets(tmp_path):
    # ~400 KB/s read against 6 MB written at once: the input must not wait for it.
    rx = Receiver(tmp_path, chunk=4096, delay=0.01)
    total = 6000
    data = capture_bytes(tmp_path, total, size=1000)
    proc = stream(rx.port, "--backlog", "64K")
    t0 = time.monotonic()
    proc.stdin.write(data)
    proc.stdin.close()
    written = time.monotonic() - t0
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err.decode()
    rx.wait()
    rx.close()
    [conn] = rx.files
    got = numbers(conn)
    assert tshark_count(conn) == len(got)
    assert got == sorted(got) and len(set(got)) == len(got)  # in order, none twice
    lines = logs(err)
    runs = dropped(lines)
    shed = {n for r in runs for n in range(r["first"] - 1, r["last"])}  # runs are 1-based
    assert sum(r["packets"] for r in runs) == len(shed) == total - len(got) > 0, runs
    assert shed.isdisjoint(got) and shed | set(got) == set(range(total))
    assert all(r["reason"] == "behind" for r in runs), runs
    assert summary(lines)["dropped"] == total - len(got)
    # The receiver needs > 10 s for the whole input; the writer was never held back.
    assert written < 5, f"writing the input took {written:.1f} s"


@needs_tshark
def test_a_restarted_receiver_gets_a_fresh_header_and_whole_records(tmp_path):
    rx = Receiver(tmp_path, close_after=20_000)
    proc = stream(rx.port)
    data = capture_bytes(tmp_path, 600)
    head, body = data[:24], data[24:]
    rec = len(body) // 600
    proc.stdin.write(head)
    for i in range(600):  # 3 s of steady packets
        proc.stdin.write(body[i * rec : (i + 1) * rec])
        proc.stdin.flush()
        if i == 200:  # the first connection is closed by now: the receiver restarts
            port = rx.port
            rx.close()
            time.sleep(0.5)
            rx2 = Receiver(tmp_path, port=port)
        time.sleep(0.005)
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err.decode()
    rx2.wait()
    rx2.close()
    first, second = rx.files[0], rx2.files[0]
    assert first.read_bytes()[:24] == second.read_bytes()[:24] == head  # a header each
    later = numbers(second)
    assert tshark_count(second) == len(later) > 100
    assert later == list(range(later[0], 600))  # from the reconnect on, every packet
    assert summary(logs(err))["connections"] == 2
    # What was dropped between the two connections is said, with its numbers.
    assert any(r["last"] <= later[0] for r in dropped(logs(err))), err.decode()


def _blackhole() -> tuple[socket.socket, list[socket.socket]]:
    """A listener that never accepts, its queue full: new SYNs are dropped (connect hangs)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    fill = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(lst.getsockname())
        fill.append(s)
    time.sleep(0.2)
    return lst, fill


@pytest.mark.parametrize("kind", ["refused", "never-accepts"])
def test_a_receiver_that_never_listens_does_not_slow_the_input(tmp_path, kind):
    if kind == "refused":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port, keep = s.getsockname()[1], [s]
    else:
        lst, keep = _blackhole()
        port = lst.getsockname()[1]
        keep.append(lst)
    total = 20000
    data = capture_bytes(tmp_path, total, size=500)
    proc = stream(port, "--connect-timeout", "2")
    t0 = time.monotonic()
    proc.stdin.write(data)
    proc.stdin.close()
    written = time.monotonic() - t0
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err.decode()
    for s in keep:
        s.close()
    lines = logs(err)
    assert summary(lines) == {
        "target": f"127.0.0.1:{port}",
        "streamed": 0,
        "dropped": total,
        "connections": 0,
    }
    assert sum(r["packets"] for r in dropped(lines)) == total
    assert any("cannot connect" in x["message"] for x in lines)
    assert written < 5, f"writing 10 MB of input took {written:.1f} s"


@needs_tshark
def test_a_slow_receiver_never_holds_up_the_end_of_the_stream(tmp_path):
    # The whole 6 MB fits the backlog; at ~400 KB/s it would take 15 s to send. After the
    # end of input the stream gets 5 s (poi.DRAIN), then drops the rest, on a record.
    rx = Receiver(tmp_path, chunk=4096, delay=0.01)
    total = 6000
    proc = stream(rx.port, "--backlog", "32M")
    proc.stdin.write(capture_bytes(tmp_path, total, size=1000))
    proc.stdin.close()
    t0 = time.monotonic()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err.decode()
    took = time.monotonic() - t0
    rx.wait()
    rx.close()
    [conn] = rx.files
    got = numbers(conn)
    assert tshark_count(conn) == len(got) > 0  # whole records to the end
    assert got == list(range(len(got)))
    lines = logs(err)
    runs = dropped(lines)
    assert {r["reason"] for r in runs} == {"stopping"}, runs
    assert sum(r["packets"] for r in runs) == total - len(got) > 0
    assert runs[0]["first"] == len(got) + 1 and runs[-1]["last"] == total
    assert took < 12, f"the stream took {took:.1f} s to end"
