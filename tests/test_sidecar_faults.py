"""entrypoint.sh under faults (issue 13): stop signals to the script or to its whole
process group; every packet sent must reach the destination."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from netns import Lab
from test_entrypoint import (
    Sidecar,
    count_packets,
    free_port,
    port_open,
    sidecar_env,
    wait_for,
)

from conftest import needs_root


def destination_packets(dest: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """Packets in every pcap part under `dest`, and the parts' names."""
    parts = sorted(dest.rglob("*.pcap.gz"))
    total = sum(count_packets(gzip.decompress(p.read_bytes()), tmp_path) for p in parts)
    return total, [p.name for p in parts]


def leftovers(tmp_dir: Path) -> list[str]:
    return [str(p) for p in tmp_dir.rglob("*") if p.is_file()]


def start(tmp_path: Path, veth: Lab, ignored: tuple[int, ...] = (), **settings: str) -> Sidecar:
    defaults = {
        "PCAP_IFACE": veth.host_if,
        "GCS_MOUNT": str(tmp_path / "pcap"),
        "PCAP_L4_PROTOS": "udp",
        "PCAP_HC_PORT": str(free_port()),
    }
    env = sidecar_env(tmp_path, **(defaults | settings))
    sidecar = Sidecar(env, tmp_path, ignored)
    # Up to ready the sidecar starts a dozen Python processes (checks, then every stage):
    # on a loaded 2-core machine that alone has taken over 30 s.
    wait_for(lambda: (tmp_path / "ready").exists(), 60, "capture to be ready")
    return sidecar


INHERITED_BY_A_SHELL_JOB = (signal.SIGINT, signal.SIGQUIT)  # `cmd &`, no job control


@needs_root
@pytest.mark.parametrize(
    "target, sig, ignored",
    [
        pytest.param("script", signal.SIGTERM, (), id="script-SIGTERM"),
        pytest.param("group", signal.SIGTERM, (), id="group-SIGTERM"),
        pytest.param("group", signal.SIGINT, (), id="group-SIGINT"),
        # Started by a non-interactive shell's `&` (as CI runs the tests): bash cannot trap
        # a signal ignored on entry, so the entrypoint starts again with it at its default.
        pytest.param("group", signal.SIGINT, INHERITED_BY_A_SHELL_JOB, id="job-group-SIGINT"),
        pytest.param("group", signal.SIGTERM, INHERITED_BY_A_SHELL_JOB, id="job-group-SIGTERM"),
    ],
)
def test_stop_signal_drains_every_packet_to_the_destination(tmp_path, target, sig, ignored):
    """`kill -- -PGID` (what a runtime or Ctrl-C does) stops as a SIGTERM to the script."""
    with Lab(root=True) as veth:
        sidecar = start(tmp_path, veth, ignored, PCAP_JSON="true")
        try:
            sent = veth.send_udp(200, seconds=1.0)
            time.sleep(0.5)
            if target == "group":
                os.killpg(sidecar.proc.pid, sig)  # the group Popen made: the script's
            else:
                sidecar.proc.send_signal(sig)
            rc = sidecar.proc.wait(timeout=60)
        finally:
            sidecar.kill()
    err = sidecar.err.read_text()
    assert rc == 0, err[-2000:]
    assert "unexpected EOF" not in err
    got, names = destination_packets(tmp_path / "pcap", tmp_path)
    assert got == sent, names
    assert list((tmp_path / "pcap").rglob("*.json.gz")), "the JSON parts were uploaded too"
    assert leftovers(tmp_path / "pcap-tmp") == []


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@needs_root
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs libfaketime (apt-get install faketime)")
def test_wall_clock_stepped_back_loses_no_part(tmp_path):
    """An NTP step of 6 s back mid-run: names stay unique, every packet is uploaded."""
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    clock = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # a step moves the wall clock only
    }
    with Lab(root=True) as veth:
        sidecar = start(tmp_path, veth, PCAP_ROTATE_SECS="1", PCAP_COMPRESS="false", **clock)
        try:
            sent = veth.send_udp(60, seconds=3.0)
            offset.write_text("-6\n")
            sent += veth.send_udp(60, seconds=3.0)
            time.sleep(1.5)
            rc, _ = sidecar.stop()
        finally:
            sidecar.kill()
    assert rc == 0, sidecar.err.read_text()[-2000:]
    parts = sorted((tmp_path / "pcap").rglob("*.pcap"))
    names = [p.name for p in parts]
    assert len(names) == len(set(names)) >= 4
    total = sum(count_packets(p.read_bytes(), tmp_path) for p in parts)
    assert total == sent
    assert leftovers(tmp_path / "pcap-tmp") == []
    assert not [e for e in sidecar.stderr_json() if e.get("severity") == "ERROR"]


@needs_root
def test_a_full_parts_directory_closes_the_part_and_keeps_going(tmp_path):
    """A 4 MB tmpfs for the parts (Cloud Run's /tmp is memory): no exit, parts uploaded,
    every packet either in the destination or counted as lost in an ERROR."""
    parts = tmp_path / "pcap-tmp"
    parts.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "ptsidecar", str(parts)], check=True)
    try:
        with Lab(root=True) as veth:
            sidecar = start(tmp_path, veth, PCAP_ROTATE_SECS="30", PCAP_COMPRESS="false")
            try:
                sent = send_udp_sized(veth, count=6000, seconds=3.0, size=1200)
                time.sleep(1.0)
                sent += send_udp_sized(veth, count=200, seconds=0.5, size=1200)
                time.sleep(1.0)
                rc, _ = sidecar.stop()
            finally:
                sidecar.kill()
        left = leftovers(parts)
    finally:
        subprocess.run(["umount", "-l", str(parts)], check=False)
    logs = sidecar.stderr_json()
    assert rc == 0, sidecar.err.read_text()[-2000:]
    full = [e for e in logs if e.get("severity") == "ERROR" and "is full" in e["message"]]
    assert full, "the full directory was said loudly"
    lost = sum(e.get("lost", 0) for e in logs if "lost" in e)
    captured = next(e["packets_written"] for e in logs if e["message"] == "capture finished")
    dest = sorted((tmp_path / "pcap").rglob("*.pcap"))
    got = sum(count_packets(p.read_bytes(), tmp_path) for p in dest)  # each one valid
    assert len(dest) >= 2 and got > 0
    assert got + lost == captured
    assert left == []


def send_udp_sized(veth: Lab, count: int, seconds: float, size: int) -> int:
    import sys
    import textwrap

    code = textwrap.dedent(
        f"""
        import socket, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        gap = {seconds} / {count}
        for i in range({count}):
            s.sendto(b"x" * {size}, ("{veth.addr(0, 1)}", 9999))
            time.sleep(gap)
        """
    )
    veth.exec(veth.peer, sys.executable, "-c", code, check=True)
    return count


@needs_root
def test_a_killed_uploader_is_restarted_and_sweeps_what_was_left(tmp_path):
    with Lab(root=True) as veth:
        sidecar = start(tmp_path, veth, PCAP_ROTATE_SECS="1")
        try:
            sent = veth.send_udp(100, seconds=2.0)
            pids = subprocess.run(
                ["pgrep", "-s", str(sidecar.proc.pid), "-f", "pcaptool upload"],
                capture_output=True,
                text=True,
            ).stdout.split()
            assert len(pids) == 1, pids
            os.kill(int(pids[0]), signal.SIGKILL)
            sent += veth.send_udp(100, seconds=2.0)
            wait_for(lambda: "upload was killed" in sidecar.err.read_text(), 20, "the restart")
            sent += veth.send_udp(50, seconds=1.0)
            time.sleep(1.0)
            rc, _ = sidecar.stop()
        finally:
            sidecar.kill()
    assert rc == 0, sidecar.err.read_text()[-3000:]
    got, names = destination_packets(tmp_path / "pcap", tmp_path)
    assert got == sent and len(names) == len(set(names))
    assert leftovers(tmp_path / "pcap-tmp") == []
    errors = [e for e in sidecar.stderr_json() if e.get("severity") == "ERROR"]
    assert [e["message"].split(":")[0] for e in errors] == ["upload was killed (exit status 137)"]


FAILING_UPLOAD = """#!/bin/bash
# pcaptool, except that the pipeline's uploader fails (exit 1) once $TRIGGER exists
if [[ "$1" == upload && " $* " != *" --check "* && " $* " != *" --sweep "* ]]; then
  "$PYTHON" -m pcaptool "$@" <&0 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [[ -e "$TRIGGER" ]]; then
      kill -KILL "$pid"
      echo "pcaptool upload: error: the test's fault" >&2
      exit 1
    fi
    sleep 0.1
  done
  wait "$pid"
  exit
fi
exec "$PYTHON" -m pcaptool "$@"
"""


@needs_root
def test_a_failed_upload_closes_the_health_port_and_ends_the_sidecar(tmp_path):
    """upload exits 1 mid-run: the port closes at once, capture stops, the parts finish
    and stay on disk (every packet is uploaded or in a finished part), exit status 1."""
    import sys

    wrapper = tmp_path / "pcaptool.sh"
    wrapper.write_text(FAILING_UPLOAD)
    wrapper.chmod(0o755)
    trigger = tmp_path / "fail-now"
    port = free_port()
    with Lab(root=True) as veth:
        sidecar = start(
            tmp_path,
            veth,
            PCAPTOOL=str(wrapper),
            PYTHON=sys.executable,
            TRIGGER=str(trigger),
            PCAP_ROTATE_SECS="1",
            PCAP_HC_PORT=str(port),
        )
        try:
            wait_for(lambda: port_open(port), 10, "the health port")
            sent = veth.send_udp(100, seconds=2.0)
            time.sleep(0.5)
            trigger.touch()
            t0 = time.monotonic()
            wait_for(lambda: not port_open(port), 5, "the health port to close")
            closed_after = time.monotonic() - t0
            rc = sidecar.proc.wait(timeout=60)
        finally:
            sidecar.kill()
    err = sidecar.err.read_text()
    assert rc == 1, err[-2000:]
    assert closed_after < 2.0
    failed = [e for e in sidecar.stderr_json() if e["message"].startswith("upload failed")]
    assert len(failed) == 1 and failed[0]["severity"] == "ERROR", err[-2000:]
    # Uploaded, or kept in a finished part (a part the killed upload had copied but not
    # yet deleted is in both: counted once).
    parts = {p.name: p for p in (tmp_path / "pcap-tmp").rglob("*.pcap.gz")}
    parts |= {p.name: p for p in (tmp_path / "pcap").rglob("*.pcap.gz")}
    got = sum(count_packets(gzip.decompress(p.read_bytes()), tmp_path) for p in parts.values())
    assert got == sent, sorted(parts)
    unfinished = [p for p in leftovers(tmp_path / "pcap-tmp") if not p.endswith(".gz")]
    assert unfinished == []


def json_records(dest: Path) -> list[dict]:
    import json

    return [
        json.loads(line)
        for part in sorted(dest.rglob("*.json.gz"))
        for line in gzip.decompress(part.read_bytes()).splitlines()
    ]


@needs_root
def test_a_killed_translate_is_restarted_and_the_records_resume(tmp_path):
    """kill -9 translate mid-run: the relay restarts it (header given again, next packet
    boundary), the gap is an ERROR; JSON records resume, the pcap parts keep every packet,
    records + shed/gap counts = packets captured, exit 0."""
    with Lab(root=True) as veth:
        sidecar = start(tmp_path, veth, PCAP_JSON="true", PCAP_ROTATE_SECS="2")
        try:
            sent = veth.send_udp(100, seconds=1.0)
            time.sleep(1.0)
            pids = subprocess.run(
                ["pgrep", "-s", str(sidecar.proc.pid), "-f", r"^\S+ -m pcaptool translate -$"],
                capture_output=True,
                text=True,
            ).stdout.split()
            assert len(pids) == 1, pids
            os.kill(int(pids[0]), signal.SIGKILL)
            wait_for(
                lambda: "translate was killed by SIGKILL" in sidecar.err.read_text(),
                20,
                "the relay",
            )
            time.sleep(3.0)  # restarted after 1 s (a python start under load)
            sent += veth.send_udp(100, port=9998, seconds=1.0)
            time.sleep(1.5)
            rc, _ = sidecar.stop()
        finally:
            sidecar.kill()
    err = sidecar.err.read_text()
    assert rc == 0, err[-3000:]
    got, names = destination_packets(tmp_path / "pcap", tmp_path)
    assert got == sent, names
    records = json_records(tmp_path / "pcap")
    per_packet = [r for r in records if "pcap" in r]
    shed = sum(r["shed"]["packets"] for r in records if "shed" in r)
    logs = sidecar.stderr_json()
    captured = next(e["packets_written"] for e in logs if e["message"] == "capture finished")
    assert captured == sent
    assert len(per_packet) + shed == captured
    after = [r for r in per_packet if r.get("udp", {}).get("dport") == 9998]
    assert len(after) == 100, "the restarted translate translated what came after"
    restart = [e for e in logs if "restarting it in 1 s" in e["message"]]
    assert len(restart) == 1 and restart[0]["severity"] == "ERROR"
    assert leftovers(tmp_path / "pcap-tmp") == []
