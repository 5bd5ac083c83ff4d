"""The read filter keeps exactly what `tcpdump -r FILE EXPR` keeps, on the whole corpus."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import corpus_files
from pcaptool.capfile.reader import CaptureReader, open_input
from pcaptool.capfile.readfilter import select_packets
from pcaptool.cli import app

EXPRESSIONS = ["tcp", "udp port 53", "ip6", "tcp[tcpflags] & tcp-syn != 0", "not arp and len > 100"]

needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")


def ours(path: Path, expression: str) -> list[tuple[int, bytes]]:
    with open_input(str(path)) as stream:
        return [
            (p.ts_ns // 1000, bytes(p.data))
            for p in select_packets(CaptureReader(stream), expression)
        ]


def tcpdumps(path: Path, expression: str, tmp: Path) -> list[tuple[int, bytes]] | None:
    """tcpdump's pick, rewritten as a microsecond pcap we read back; None if tcpdump refuses."""
    out = tmp / "t.pcap"
    r = subprocess.run(
        ["tcpdump", "-r", str(path), "-w", str(out), "--time-stamp-precision=micro", expression],
        capture_output=True,
    )
    if r.returncode != 0:
        return None
    with open(out, "rb") as stream:
        return [(p.ts_ns // 1000, bytes(p.data)) for p in CaptureReader(stream)]


@needs_tcpdump
def test_read_filter_equals_tcpdump_on_the_corpus(corpus, tmp_path) -> None:
    compared = kept = 0
    for path in corpus_files():
        for expression in EXPRESSIONS:
            want = tcpdumps(path, expression, tmp_path)
            if want is None:
                continue  # tcpdump cannot read it, or the link type has no such field
            try:
                got = ours(path, expression)
            except Exception as exc:  # a corrupt file: tcpdump read it whole, so must we
                pytest.fail(f"{path.name} {expression!r}: {exc}")
            assert got == want, f"{path.name} {expression!r}: {len(got)} vs tcpdump {len(want)}"
            compared += 1
            kept += len(got)
    assert compared >= 300 and kept > 1000, (compared, kept)


def _pcap(tmp: Path, frames: list[bytes], linktype: int = 1) -> Path:
    path = tmp / "built.pcap"
    body = b"".join(
        struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f for i, f in enumerate(frames)
    )
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype) + body)
    return path


def _udp_frame(dport: int) -> bytes:
    import dpkt

    udp = dpkt.udp.UDP(sport=40000, dport=dport, data=b"x" * 8)
    ip = dpkt.ip.IP(src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02", p=17, data=udp)
    ip.len = len(bytes(ip))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip))


def test_translate_r_trailing_filter_and_count(tmp_path) -> None:
    path = _pcap(tmp_path, [_udp_frame(p) for p in (53, 80, 53, 53, 9)])
    runner = CliRunner()
    r = runner.invoke(app, ["translate", "--no-http", "-r", str(path), "udp", "port", "53"])
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["udp"]["dport"] for rec in recs] == [53, 53, 53]
    r = runner.invoke(app, ["translate", "--no-http", "-c", "2", "-f", "udp port 53", str(path)])
    assert [json.loads(x)["udp"]["dport"] for x in r.stdout.splitlines()] == [53, 53]
    r = runner.invoke(app, ["translate", "--no-http", "-c", "4", str(path), str(path)])
    assert len(r.stdout.splitlines()) == 4  # -c counts across files, as tcpdump's


def test_bad_filter_is_one_line_exit_2_before_reading(tmp_path) -> None:
    r = CliRunner().invoke(app, ["translate", "-r", str(tmp_path / "absent.pcap"), "tcp", "portt"])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "bad filter expression 'tcp portt'" in r.stderr


@needs_tcpdump
def test_merge_read_filter_and_count_equal_tcpdump(tmp_path) -> None:
    a = _pcap(tmp_path, [_udp_frame(p) for p in (53, 80, 53)])
    b = a.rename(tmp_path / "a.pcap")
    c = _pcap(tmp_path, [_udp_frame(p) for p in (9, 53)])
    out = tmp_path / "m.pcap"
    r = CliRunner().invoke(app, ["merge", "-o", str(out), "-f", "udp port 53", str(b), str(c)])
    assert r.exit_code == 0, r.stderr
    with open(out, "rb") as stream:
        got = [bytes(p.data) for p in CaptureReader(stream)]
    assert got == [_udp_frame(53)] * 3
    r = CliRunner().invoke(app, ["merge", "-o", str(out), "-c", "2", "-r", str(b), "-r", str(c)])
    assert r.exit_code == 0, r.stderr
    with open(out, "rb") as stream:
        assert len(list(CaptureReader(stream))) == 2
