"""`pcaptool relay` (sidecar/relay.py): translate killed mid-stream is restarted with the
stream's header and goes on at a packet boundary; every gap is counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from test_rotate import pcap_bytes, pcapng_bytes

from conftest import PCAPTOOL, pcaptool_env


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("make", [pcap_bytes, pcapng_bytes], ids=["pcap", "pcapng"])
def test_a_killed_translate_is_restarted_at_a_packet_boundary(make):
    n = 2000
    data = make(n)
    half = len(data) // 2  # inside some packet: the relay writes whole ones only
    relay = subprocess.Popen(
        [*PCAPTOOL, "relay", "--first-delay", "0.2", "--", *PCAPTOOL, "translate", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(relay.stdout), daemon=True)
    reader.start()
    relay.stdin.write(data[:half])
    relay.stdin.flush()
    deadline = time.monotonic() + 60
    while len(lines) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    (translate,) = children(relay.pid)
    os.kill(translate, signal.SIGKILL)
    relay.stdin.write(data[half:])
    relay.stdin.close()
    rc = relay.wait(120)
    reader.join(10)
    err = relay.stderr.read().decode()
    assert rc == 0, err
    records = [json.loads(line) for line in lines]  # every line whole
    per_packet = [r for r in records if "pcap" in r]
    shed = sum(r["shed"]["packets"] for r in records if "shed" in r)
    assert len(per_packet) + shed == n
    assert [r["pcap"]["num"] for r in per_packet].count(1) == 2, "a second translate ran"
    assert len(per_packet) > n // 2  # the second one had the header and went on
    assert "translate was killed by SIGKILL: restarting it in 0.2 s" in err
    gaps = [r for r in records if r.get("severity") == "ERROR" and "shed" in r]
    assert all("was killed by SIGKILL" in r["message"] for r in gaps)


def test_a_consumer_that_fails_at_the_end_fails_the_relay_and_counts_the_gap():
    """It read all 5 packets and translated none: no restart (nothing is left to give a
    new one), one ERROR record for the 5, exit 1."""
    r = subprocess.run(
        [*PCAPTOOL, "relay", "--name", "consumer", "--", "sh", "-c", "cat >/dev/null; exit 3"],
        input=pcap_bytes(5),
        capture_output=True,
        env=pcaptool_env(),
        timeout=60,
    )
    assert r.returncode == 1
    (gap,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert gap["severity"] == "ERROR" and gap["shed"] == {
        "packets": 5, "first": 1, "last": 5, "bytes": 0,
    }  # fmt: skip
    assert gap["message"].startswith(
        "#1-#5 5 packet(s) not translated: consumer exited with status 3"
    )
    assert "restarting" not in r.stderr.decode()


def test_packets_beyond_the_backlog_are_counted_in_order_not_handed_over():
    """A consumer that reads nothing for 3 s and a 64 KiB queue: what does not fit is one
    ERROR gap record (never a broken stream), and records plus shed/gap counts = packets."""
    n = 4000
    slow = f"sleep 3; exec {' '.join(PCAPTOOL)} translate -"
    r = subprocess.run(
        [*PCAPTOOL, "relay", "--backlog", "64K", "--", "sh", "-c", slow],
        input=pcap_bytes(n),
        capture_output=True,
        env=pcaptool_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode()
    records = [json.loads(line) for line in r.stdout.splitlines()]
    per_packet = [r for r in records if "pcap" in r]
    gaps = [r for r in records if "fell behind" in r.get("message", "")]
    assert gaps and all(g["severity"] == "ERROR" for g in gaps)
    shed = sum(r["shed"]["packets"] for r in records if "shed" in r)
    assert len(per_packet) + shed == n and len(per_packet) > 0
    # the numbers are the input's: translate numbered what it got from 1, in order
    assert [r["pcap"]["num"] for r in per_packet] == list(range(1, len(per_packet) + 1))
