"""`pcaptool healthcheck`: the port refuses before capture is ready, accepts while it runs,
refuses after it ends; `probe` exits 0/1 on the same signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from netns import Lab, stats_line, wait_for

from conftest import PCAPTOOL, needs_root, pcaptool_env, run_pcaptool
from pcaptool.sidecar.health import port_accepts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`healthcheck serve` on a free loopback port, watching tmp_path/ready."""
    port = free_port()
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            *PCAPTOOL,
            "healthcheck",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ready-file",
            str(ready),
        ],
        env=pcaptool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # let it start (its SIGTERM handler installed); the port must still be refused
        assert wait_for(lambda: _catches_sigterm(proc.pid), timeout=30)
        yield port, ready, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def test_port_follows_the_ready_file(server):
    port, ready, proc = server
    assert not port_accepts(port)
    ready.write_text(json.dumps({"pid": os.getpid()}))
    assert wait_for(lambda: port_accepts(port), timeout=5)
    ready.unlink()
    assert wait_for(lambda: not port_accepts(port), timeout=5)
    assert proc.poll() is None


def test_stale_ready_file_is_not_ready(server, tmp_path):
    port, ready, _ = server
    dead = subprocess.Popen(["true"])
    dead.wait()
    ready.write_text(json.dumps({"pid": dead.pid}))
    time.sleep(0.8)
    assert not port_accepts(port)
    r = run_pcaptool("healthcheck", "probe", "--ready-file", str(ready))
    assert r.returncode == 1


def test_serve_exits_0_on_sigterm(server):
    _, _, proc = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_probe(tmp_path):
    ready = tmp_path / "ready"
    assert run_pcaptool("healthcheck", "probe", "--ready-file", str(ready)).returncode == 1
    ready.write_text(json.dumps({"pid": os.getpid()}))
    assert run_pcaptool("healthcheck", "probe", "--ready-file", str(ready)).returncode == 0
    closed = free_port()
    r = run_pcaptool("healthcheck", "probe", "--ready-file", str(ready), "--port", str(closed))
    assert r.returncode == 1
    env = {**pcaptool_env(), "PCAP_READY_FILE": str(tmp_path / "absent")}
    assert run_pcaptool("healthcheck", "probe", env=env).returncode == 1


@needs_root
@pytest.mark.root
def test_port_refuses_before_capture_accepts_during_refuses_after(server):
    """The real thing: capture in a namespace drives the port on the host's loopback."""
    port, ready, _ = server
    with Lab(1) as lab:
        assert not port_accepts(port)
        proc = lab.pcaptool(
            "capture", "-i", "eth", "-w", os.devnull, "--duration", "3", "--ready-file", str(ready)
        )
        assert wait_for(lambda: port_accepts(port), timeout=10)
        r = run_pcaptool("healthcheck", "probe", "--ready-file", str(ready), "--port", str(port))
        assert r.returncode == 0
        assert proc.wait(timeout=20) == 0
        assert stats_line(proc.stderr.read())["stopped_by"] == "duration"
        assert wait_for(lambda: not port_accepts(port), timeout=5)
        r = run_pcaptool("healthcheck", "probe", "--ready-file", str(ready))
        assert r.returncode == 1
