"""A part rotate could not finish (full disk, kill mid-write) becomes a valid truncated
capture: repaired in place, and recovered by `upload --sweep`."""

from __future__ import annotations

import struct
import subprocess

import pytest

from conftest import run_pcaptool
from pcaptool.sidecar.partfix import recover_stranded, repair, whole_length


def pcap(count: int) -> tuple[bytes, list[int]]:
    """A pcap of `count` frames; also the byte offset where each record ends."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    ends = []
    for n in range(count):
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x88\xb5" + bytes([n % 256]) * (60 + n % 7)
        out += struct.pack("<IIII", 1_700_000_000 + n, 0, len(frame), len(frame)) + frame
        ends.append(len(out))
    return bytes(out), ends


def pcapng(count: int) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", 1, 0, 65535))
    for n in range(count):
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x88\xb5" + bytes([n]) * 50
        out += block(6, struct.pack("<IIIII", 0, 0, n, len(frame), len(frame)) + frame)
    return out


def tshark_count(path) -> int:
    r = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return len(r.stdout.split())


@pytest.mark.parametrize("cut", [1, 10, 16, 17, 40])
def test_a_pcap_cut_inside_a_record_keeps_the_whole_ones(tmp_path, cut):
    data, ends = pcap(20)
    f = tmp_path / ".part__eth0__20260101T000000.pcap.tmp"
    f.write_bytes(data[: ends[11] + cut])
    assert repair(f) == 12
    assert f.read_bytes() == data[: ends[11]]
    assert tshark_count(f) == 12


def test_a_pcapng_cut_short_keeps_its_header_blocks_and_whole_packets(tmp_path):
    data = pcapng(10)
    f = tmp_path / "x.pcapng"
    f.write_bytes(data[:-30])
    assert repair(f) == 9
    assert tshark_count(f) == 9


def test_ndjson_is_cut_at_the_last_newline(tmp_path):
    f = tmp_path / ".part__eth0__20260101T000000.json.tmp"
    f.write_bytes(b'{"a":1}\n{"a":2}\n{"a":')
    assert whole_length(f) == (16, 2)
    assert repair(f) == 2 and f.read_bytes() == b'{"a":1}\n{"a":2}\n'


def test_recover_renames_only_rotate_temporaries(tmp_path):
    data, ends = pcap(5)
    (tmp_path / ".part__eth0__20260101T000000.pcap.tmp").write_bytes(data[:-3])
    (tmp_path / ".part__eth0__20260101T000001_0002.pcap.tmp").write_bytes(data[:24])  # empty
    # compress's temporary (a .gz being written): its source is still there, leave it
    gz_tmp = tmp_path / ".part__eth0__20260101T000002.pcap.gz.abcd1234.tmp"
    gz_tmp.write_bytes(b"\x1f\x8b partial")
    got = recover_stranded(tmp_path)
    assert [p.name for p in got] == ["part__eth0__20260101T000000.pcap"]
    assert tshark_count(got[0]) == 4
    assert gz_tmp.exists()
    assert not (tmp_path / ".part__eth0__20260101T000001_0002.pcap.tmp").exists()


def test_upload_sweep_uploads_a_stranded_temporary_part(tmp_path):
    data, ends = pcap(8)
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / ".part__eth0__20260101T000000.pcap.tmp").write_bytes(data[: ends[5] + 9])
    dest = tmp_path / "dest"
    r = run_pcaptool("upload", "--dest", str(dest), "--sweep", str(parts))
    assert r.returncode == 0, r.stderr
    uploaded = list(dest.rglob("part__eth0__20260101T000000.pcap"))
    assert len(uploaded) == 1 and tshark_count(uploaded[0]) == 6
    assert list(parts.iterdir()) == []
    assert b"recovered 6 record(s)" in r.stderr


def test_a_part_being_written_is_left_alone(tmp_path):
    from pcaptool.sidecar.partfix import hold

    data, _ = pcap(3)
    tmp = tmp_path / ".part__eth0__20260101T000000.pcap.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        hold(f)
        assert recover_stranded(tmp_path) == []
        assert tmp.exists()
    assert [p.name for p in recover_stranded(tmp_path)] == ["part__eth0__20260101T000000.pcap"]
