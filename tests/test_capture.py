"""`pcaptool capture` for real: network namespaces, veth pairs named eth*, traffic across them,
tshark as the independent reader of what was written."""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest
from netns import Lab, stats_line, stop, tshark_fields, wait_for

from conftest import PCAPTOOL, needs_root, pcaptool_env, run_pcaptool
from pcaptool.capfile.reader import PCAP_HEADER, CaptureReader

pytestmark = [needs_root, pytest.mark.root]


@pytest.fixture
def lab():
    with Lab(1) as lab:
        yield lab


@pytest.fixture
def lab2():
    with Lab(2) as lab:
        yield lab


@pytest.fixture(params=["auto", "pcapy"])
def engine(request, monkeypatch):
    """Both read paths: libpcap's C dump loop (one interface to pcap) and pcapy-ng's."""
    monkeypatch.setenv("PCAPTOOL_CAPTURE_ENGINE", request.param)  # pcaptool_env() copies it
    return request.param


def start(lab: Lab, tmp_path, *args: str, **kw) -> tuple[subprocess.Popen, os.PathLike]:
    """Start capture in the lab and wait until its ready file says it is capturing."""
    ready = tmp_path / "ready"
    proc = lab.pcaptool("capture", "--ready-file", str(ready), *args, **kw)
    if not wait_for(lambda: ready.exists() or proc.poll() is not None):
        stop(proc, signal.SIGKILL)
        pytest.fail("capture never became ready")
    if proc.poll() is not None:
        _, err = proc.communicate()
        pytest.fail(f"capture exited early ({proc.returncode}): {err.decode()}")
    return proc, ready


def test_count_equals_sent_and_ends_capture(lab, tmp_path, engine):
    out = tmp_path / "c.pcap"
    proc, ready = start(
        lab, tmp_path, "-i", "eth", "--filter", "udp port 9999", "-w", str(out), "--count", "300"
    )
    lab.send_udp(300)
    rc = proc.wait(timeout=20)
    err = proc.stderr.read()
    assert rc == 0, err
    assert not ready.exists()
    rows = tshark_fields(out, "ip.src", "udp.dstport", "frame.cap_len")
    assert len(rows) == 300
    assert Counter((r[0], r[1]) for r in rows) == {(lab.addr(0, 2), "9999"): 300}
    stats = stats_line(err)
    assert stats["severity"] == "INFO"
    assert stats["packets_written"] == 300
    assert stats["stopped_by"] == "count"
    assert stats["packets_dropped_kernel"] == 0
    assert [i["name"] for i in stats["interfaces"]] == ["eth0"]
    with open(out, "rb") as f:
        reader = CaptureReader(f, "c.pcap")
        assert len(list(reader)) == 300
    # libpcap's own loop asks for nanoseconds; pcapy-ng only gives microseconds
    assert reader.nanosecond == (engine == "auto")
    expected_engine = "libpcap-dump" if engine == "auto" else "pcapy"
    assert f'"engine":"{expected_engine}"' in err.decode()


def test_count_stops_before_all_sent_packets(lab, tmp_path):
    out = tmp_path / "c.pcap"
    proc, _ = start(lab, tmp_path, "-i", "eth0", "--ports", "9999", "-w", str(out), "-c", "25")
    lab.send_udp(100)
    assert proc.wait(timeout=20) == 0
    assert len(tshark_fields(out, "frame.number")) == 25
    assert stats_line(proc.stderr.read())["packets_written"] == 25


def test_duration_ends_capture_even_when_nothing_matches(lab, tmp_path, engine):
    out = tmp_path / "c.pcap"
    t0 = time.monotonic()
    proc, ready = start(
        lab, tmp_path, "-i", "eth", "--filter", "udp port 1", "-w", str(out), "--duration", "1.5"
    )
    lab.send_udp(20)  # none match
    rc = proc.wait(timeout=20)
    elapsed = time.monotonic() - t0
    err = proc.stderr.read()
    assert rc == 0, err
    assert 1.5 <= elapsed < 10
    assert not ready.exists()
    assert tshark_fields(out, "frame.number") == []
    assert stats_line(err)["stopped_by"] == "duration"


def test_duration_from_env(lab, tmp_path):
    out = tmp_path / "c.pcap"
    env = {**pcaptool_env(), "PCAP_TIMEOUT_SECS": "1"}
    proc = lab.pcaptool("capture", "-i", "eth", "-w", str(out), "--ready-file", "", env=env)
    assert proc.wait(timeout=20) == 0
    assert stats_line(proc.stderr.read())["stopped_by"] == "duration"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_capture_leaves_a_whole_file(lab, tmp_path, engine, sig):
    out = tmp_path / "c.pcap"
    proc, ready = start(lab, tmp_path, "-i", "eth", "-w", str(out), "--l4-protos", "udp")
    lab.send_udp(500, size=700)
    time.sleep(0.3)
    rc, _, err = stop(proc, sig)
    assert rc == 0, err
    assert not ready.exists()
    # tshark reads it to the end without complaint: no cut-short record
    r = subprocess.run(["tshark", "-r", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and "cut short" not in r.stderr, r.stderr
    stats = stats_line(err)
    assert stats["stopped_by"] == signal.Signals(sig).name
    assert stats["packets_written"] == 500 == len(r.stdout.splitlines())
    assert stats["packets_received"] == 500


def test_repeated_sigterm_still_stops_cleanly(lab, tmp_path, engine):
    """A supervisor (or `timeout`, which signals the child and then its group) may send
    SIGTERM more than once: the stop stays clean, exit 0, the file whole."""
    out = tmp_path / "c.pcap"
    proc, _ = start(lab, tmp_path, "-i", "eth", "-w", str(out), "--l4-protos", "udp")
    lab.send_udp(50)
    time.sleep(0.3)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.005)
    assert proc.wait(timeout=10) == 0, proc.stderr.read()
    assert stats_line(proc.stderr.read())["packets_written"] == 50
    r = subprocess.run(["tshark", "-r", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 50


def test_stdout_is_live_and_sigterm_closes_it(lab, tmp_path, engine):
    """`capture | reader` sees packets while capture runs (flushed per batch)."""
    proc, _ = start(lab, tmp_path, "-i", "eth", "--ports", "9999")
    reader = CaptureReader(proc.stdout, "capture")
    got: list = []

    def read() -> None:
        for pkt in reader:
            got.append(pkt)
            if len(got) == 5:
                return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    lab.send_udp(5)
    thread.join(timeout=10)
    assert len(got) == 5, "packets did not reach the pipe while capture was running"
    assert proc.poll() is None
    lab.send_udp(7)
    time.sleep(0.3)
    rc, rest, err = stop(proc)
    assert rc == 0
    tail = list(CaptureReader(_prefixed(rest), "rest"))
    assert stats_line(err)["packets_written"] == 12
    assert len(tail) == 7


def _prefixed(rest: bytes) -> io.BytesIO:
    """The bytes after the first reader stopped, behind a pcap header for a new reader."""
    return io.BytesIO(PCAP_HEADER["<"].pack(0xA1B2C3D4, 2, 4, 0, 0, 65536, 1) + rest)


def test_several_interfaces_pcapng_keeps_names(lab2, tmp_path):
    lab = lab2
    out = tmp_path / "c.pcapng"
    proc, _ = start(lab, tmp_path, "-i", "eth", "-w", str(out), "--ports", "9999")
    lab.send_udp(30, link=0)
    lab.send_udp(45, link=1)
    time.sleep(0.3)
    rc, _, err = stop(proc)
    assert rc == 0, err
    rows = tshark_fields(out, "frame.interface_name", "ip.src")
    assert Counter(tuple(r) for r in rows) == {
        ("eth0", lab.addr(0, 2)): 30,
        ("eth1", lab.addr(1, 2)): 45,
    }
    stats = stats_line(err)
    assert {i["name"]: i["written"] for i in stats["interfaces"]} == {"eth0": 30, "eth1": 45}


def test_several_interfaces_refuse_pcap_format(lab2, tmp_path):
    r = lab2.exec(
        lab2.cap, *_cli("capture", "-i", "eth", "--format", "pcap", "-w", str(tmp_path / "x"))
    )
    assert r.returncode == 2
    assert b"eth0, eth1" in r.stderr and b"Traceback" not in r.stderr


def test_any_device_is_linux_sll(lab, tmp_path):
    out = tmp_path / "c.pcap"
    proc, _ = start(lab, tmp_path, "-i", "any", "-w", str(out), "--ports", "9999", "-c", "10")
    lab.send_udp(10)
    assert proc.wait(timeout=20) == 0
    rows = tshark_fields(out, "frame.protocols")
    assert len(rows) == 10 and all(r[0].startswith("sll:") for r in rows)


def test_compat_filters_in_user_space(lab, tmp_path):
    out = tmp_path / "c.pcap"
    proc, _ = start(
        lab, tmp_path, "--compat", "-i", "eth", "-w", str(out), "--filter", "udp port 9999"
    )
    lab.send_udp(40, port=9999)
    lab.send_udp(60, port=8888)
    time.sleep(0.3)
    rc, _, err = stop(proc)
    assert rc == 0, err
    rows = tshark_fields(out, "udp.dstport", "frame.protocols")
    assert [r[0] for r in rows] == ["9999"] * 40  # the file is filtered too
    assert all(r[1].startswith("sll:") for r in rows)  # compat captures on `any`
    stats = stats_line(err)
    assert stats["packets_written"] == 40
    assert stats["packets_received"] >= 100  # the kernel delivered everything


def test_snaplen_truncates_and_keeps_wire_length(lab, tmp_path, engine):
    out = tmp_path / "c.pcap"
    proc, _ = start(
        lab, tmp_path, "-i", "eth", "-w", str(out), "--ports", "9999", "--snaplen", "100", "-c", "3"
    )
    lab.send_udp(3, size=500)
    assert proc.wait(timeout=20) == 0
    assert tshark_fields(out, "frame.cap_len", "frame.len") == [["100", "542"]] * 3


def test_ipv6_and_pcapng_on_one_interface(lab, tmp_path):
    out = tmp_path / "c.pcapng"
    proc, _ = start(
        lab,
        tmp_path,
        "-i",
        "eth",
        "--format",
        "pcapng",
        "-w",
        str(out),
        "--l3-protos",
        "ipv6",
        "--ports",
        "9999",
        "-c",
        "8",
    )
    lab.send_udp(4)  # IPv4: filtered out
    lab.send_udp(8, v6=True)
    assert proc.wait(timeout=20) == 0
    rows = tshark_fields(out, "ipv6.src", "frame.interface_name")
    assert rows == [[lab.addr6(0, 2), "eth0"]] * 8


def test_resolve_every_updates_the_live_filter(lab, tmp_path, engine):
    """--hosts NAME re-resolved: when the name moves, the kernel filter follows."""
    hosts = lab.hosts_file(lab.cap)
    hosts.write_text(f"127.0.0.1 localhost\n{lab.addr(0, 2)} peer.ptcap.test\n")
    lab.exec(lab.peer, "ip", "addr", "add", f"{lab.addr(0, 3)}/24", "dev", "eth0", check=True)
    out = tmp_path / "c.pcap"
    proc, _ = start(
        lab,
        tmp_path,
        "-i",
        "eth",
        "-w",
        str(out),
        "--hosts",
        "peer.ptcap.test",
        "--l4-protos",
        "udp",
        "--resolve-every",
        "0.3",
    )
    lab.send_udp(10, src_host=2)
    lab.send_udp(10, src_host=3)  # not the host (yet)
    with open(hosts, "r+") as f:  # in place: the bind mount holds the inode
        f.truncate(0)
        f.write(f"127.0.0.1 localhost\n{lab.addr(0, 3)} peer.ptcap.test\n")
    err_lines: list[str] = []

    def updated() -> bool:
        line = proc.stderr.readline().decode()
        err_lines.append(line)
        return "filter updated" in line

    assert wait_for(updated, timeout=10), err_lines
    lab.send_udp(10, src_host=2)  # no longer the host
    lab.send_udp(15, src_host=3)
    time.sleep(0.3)
    rc, _, _ = stop(proc)
    assert rc == 0
    srcs = Counter(r[0] for r in tshark_fields(out, "ip.src"))
    assert srcs == {lab.addr(0, 2): 10, lab.addr(0, 3): 15}


def test_print_filter_resolves_hosts_in_the_namespace(lab):
    lab.hosts_file(lab.cap).write_text(
        f"{lab.addr(0, 2)} a.ptcap.test\n{lab.addr6(0, 2)} a.ptcap.test\n"
    )
    r = lab.exec(lab.cap, *_cli("capture", "--print-filter", "--hosts", "a.ptcap.test"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == (
        f"(ip or ip6) and (tcp or udp) and (host {lab.addr(0, 2)} or host {lab.addr6(0, 2)})"
    )


def test_loopback_only_when_asked(lab, tmp_path):
    r = lab.exec(lab.cap, *_cli("capture", "-i", "l", "-w", str(tmp_path / "x"), "-c", "1"))
    assert r.returncode == 2
    assert b"no interface matches the prefix 'l'" in r.stderr and b"eth0, lo" in r.stderr
    r = lab.exec(
        lab.cap,
        *_cli(
            "capture",
            "-i",
            "lo",
            "--loopback",
            "-w",
            str(tmp_path / "x"),
            "--duration",
            "0.5",
            "--ready-file",
            "",
        ),
    )
    assert r.returncode == 0, r.stderr
    assert [i["name"] for i in stats_line(r.stderr)["interfaces"]] == ["lo"]


def test_no_match_lists_interfaces(lab, tmp_path):
    r = lab.exec(lab.cap, *_cli("capture", "-i", "wlan", "-w", str(tmp_path / "x")))
    assert r.returncode == 2
    assert r.stderr.decode().strip() == (
        "pcaptool: error: no interface matches the prefix 'wlan'; "
        "interfaces here: eth0, lo (or 'any')"
    )


def test_refuses_to_write_to_a_terminal():
    master, slave = pty.openpty()
    try:
        r = subprocess.run(
            [*PCAPTOOL, "capture", "-i", "lo"],
            stdout=slave,
            stderr=subprocess.PIPE,
            env=pcaptool_env(),
            timeout=30,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 2
    assert b"terminal" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--snaplen", "-1"], "--snaplen must be 0 (the whole packet"),
        (["--filter", "tcp port and"], "invalid filter expression"),
        (["--ports", "22 or host 1.2.3.4"], "not a port number"),
        (["--hosts", "example.com or port 22"], "not a valid host name"),
    ],
)
def test_bad_values_are_one_line_exit_2(args, message):
    r = run_pcaptool("capture", "-w", "/dev/null", *args)
    assert r.returncode == 2
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def _cli(*args: str) -> list[str]:
    return [*PCAPTOOL, *args]


def test_reader_leaving_stops_capture_quietly(lab, tmp_path, engine):
    """`capture | head -c 100`: exit 0, no traceback, the stats line says why."""
    proc, ready = start(lab, tmp_path, "-i", "eth", "--ports", "9999")
    lab.send_udp(50, size=200)
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()
    lab.send_udp(600, size=1000)  # more than a pipe holds: the next write fails
    rc = proc.wait(timeout=20)
    err = proc.stderr.read()
    assert rc == 0, err
    assert b"Traceback" not in err
    assert stats_line(err)["stopped_by"] == "output closed"
    assert not ready.exists()


@pytest.mark.skipif(not shutil.which("ping"), reason="needs ping (iputils-ping)")
def test_ping_requests_and_replies_are_captured(lab, tmp_path):
    out = tmp_path / "c.pcap"
    proc, _ = start(lab, tmp_path, "-i", "eth", "-w", str(out), "--l4-protos", "icmp,icmp6")
    r = lab.exec(lab.peer, "ping", "-c", "5", "-i", "0.05", "-W", "2", lab.addr(0, 1))
    assert r.returncode == 0, r.stdout
    r = lab.exec(lab.peer, "ping", "-6", "-c", "3", "-i", "0.05", "-W", "2", lab.addr6(0, 1))
    assert r.returncode == 0, r.stdout
    time.sleep(0.3)
    rc, _, err = stop(proc)
    assert rc == 0, err
    kinds = Counter(tuple(r) for r in tshark_fields(out, "icmp.type", "icmpv6.type"))
    # echo request/reply: ICMP 8/0, ICMPv6 128/129 (neighbour discovery is also ICMPv6)
    assert kinds[("8", "")] == 5 and kinds[("0", "")] == 5
    assert kinds[("", "128")] == 3 and kinds[("", "129")] == 3


def test_sigterm_with_a_slow_reader_leaves_a_whole_stream(lab, tmp_path, engine):
    """The writer is blocked on a full pipe when SIGTERM comes: the stream still reads whole."""
    proc, _ = start(lab, tmp_path, "-i", "eth", "--ports", "9999")
    lab.send_udp(3000, size=1000)  # ~3 MB: far more than the pipe holds
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    packets = list(CaptureReader(proc.stdout, "capture"))  # raises if a record is cut short
    assert proc.wait(timeout=20) == 0
    stats = stats_line(proc.stderr.read())
    assert stats["stopped_by"] == "SIGTERM"
    assert len(packets) == stats["packets_written"] > 0
    assert stats["packets_received"] == 3000


def test_capture_pipe_translate_shows_interface_names(lab2, tmp_path):
    """capture (2 interfaces, pcapng) | translate: each record names its interface."""
    lab = lab2
    proc, _ = start(lab, tmp_path, "-i", "eth", "--ports", "9999", "-c", "10")
    translate = subprocess.Popen(
        [*PCAPTOOL, "translate"],
        stdin=proc.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    proc.stdout.close()
    lab.send_udp(4, link=0)
    lab.send_udp(6, link=1)
    out, err = translate.communicate(timeout=30)
    assert proc.wait(timeout=20) == 0
    assert translate.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    names = Counter(r["pcap"]["iface"]["name"] for r in records)
    assert names == {"eth0": 4, "eth1": 6}


@pytest.mark.parametrize("engine_name", ["auto", "pcapy"])
def test_buffer_size_is_applied(lab, tmp_path, monkeypatch, engine_name):
    monkeypatch.setenv("PCAPTOOL_CAPTURE_ENGINE", engine_name)
    out = tmp_path / "c.pcap"
    proc, _ = start(
        lab,
        tmp_path,
        "-i",
        "eth",
        "-w",
        str(out),
        "--ports",
        "9999",
        "-c",
        "5",
        "--buffer-size",
        str(8 << 20),
    )
    lab.send_udp(5)
    assert proc.wait(timeout=20) == 0
    assert len(tshark_fields(out, "frame.number")) == 5
    r = run_pcaptool("capture", "-w", os.devnull, "--buffer-size", "-1")
    assert r.returncode == 2 and b"cannot be negative" in r.stderr
