"""pcap.iface names the interface of a pcap stream (`translate --iface`), the sidecar's too."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import dpkt
from netns import Lab
from packets import eth, ip4, udp

from conftest import PCAPTOOL, needs_root, pcaptool_env, run_pcaptool

REPO = Path(__file__).resolve().parent.parent


def _pcap(n: int = 2) -> bytes:
    buf = io.BytesIO()
    w = dpkt.pcap.Writer(buf)
    for i in range(n):
        w.writepkt(eth(ip4(udp(4000 + i, 53, b"x"), 17)), ts=1_700_000_000 + i)
    return buf.getvalue()


def _addresses(name: str) -> set[str]:
    out = subprocess.run(["ip", "-j", "addr", "show", "dev", name], capture_output=True, text=True)
    return {f"{a['local']}/{a['prefixlen']}" for a in json.loads(out.stdout)[0]["addr_info"]}


def test_iface_names_a_pcap_stream_with_this_systems_index_and_addresses():
    r = run_pcaptool("translate", "--iface", "lo", "-", input=_pcap())
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 2
    for rec in recs:
        iface = rec["pcap"]["iface"]
        assert iface["name"] == "lo" and iface["index"] == 0
        assert iface["ifindex"] == socket.if_nametoindex("lo")
        assert set(iface["addresses"]) == _addresses("lo")
        assert "127.0.0.1/8" in iface["addresses"]
        assert rec["message"].startswith(f"#{rec['pcap']['num']} lo ")


def test_without_iface_a_pcap_stream_names_none_and_an_unknown_name_has_no_index():
    r = run_pcaptool("translate", "-", input=_pcap(1))
    assert json.loads(r.stdout)["pcap"]["iface"] == {"index": 0, "name": None}
    r = run_pcaptool("translate", "-", input=_pcap(1), env=pcaptool_env() | {
        "PCAPTOOL_CAPTURE_IFACES": "nosuchif0"})  # fmt: skip
    iface = json.loads(r.stdout)["pcap"]["iface"]
    assert iface == {"index": 0, "name": "nosuchif0", "ifindex": None, "addresses": []}


def test_the_same_through_the_workers():
    r = run_pcaptool("translate", "--workers", "2", "--ordered", "-i", "lo", "-", input=_pcap(6))
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["pcap"]["iface"]["ifindex"] for x in recs] == [socket.if_nametoindex("lo")] * 6


@needs_root
def test_sidecar_records_carry_the_interface_capture_resolved(tmp_path):
    """entrypoint.sh with PCAP_IFACE=eth (a prefix) in a namespace with eth0: the NDJSON
    lines on stdout name eth0, with the namespace's index and addresses for it."""
    with Lab() as lab:
        env = {k: v for k, v in pcaptool_env().items() if not k.startswith(("PCAP_", "K_"))}
        env |= {
            "PCAPTOOL": " ".join(PCAPTOOL),
            "PCAP_IFACE": "eth",
            "PCAP_TCPDUMP": "false",
            "PCAP_JSON_LOG": "true",
            "PCAP_L4_PROTOS": "udp",
            "PCAP_READY_FILE": str(tmp_path / "ready"),
            "TMPDIR": str(tmp_path),
        }
        out, err = tmp_path / "stdout", tmp_path / "stderr"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", lab.cap, "bash", str(REPO / "entrypoint.sh")],
                env=env,
                stdout=o,
                stderr=e,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "ready").exists():
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
            lab.send_udp(3, link=0)
            deadline = time.monotonic() + 30
            while out.read_text().count("\n") < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, err.read_text()[-3000:]
            index = int(lab.exec(lab.cap, "cat", "/sys/class/net/eth0/ifindex").stdout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        recs = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")]
        recs = [r for r in recs if "pcap" in r]
        assert len(recs) >= 3, err.read_text()[-3000:]
        for rec in recs:
            iface = rec["pcap"]["iface"]
            assert iface["name"] == "eth0" and iface["ifindex"] == index
            assert f"{lab.addr(0, 1)}/24" in iface["addresses"]
            assert f"{lab.addr6(0, 1)}/64" in iface["addresses"]
