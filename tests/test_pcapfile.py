"""The capture reader and writers: formats, pipes, concatenation, and breaks."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import corpus_files, run_pcaptool
from pcaptool.capfile.reader import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    CaptureReader,
    Packet,
    PcapngWriter,
    PcapWriter,
    open_input,
    read_packets,
)
from pcaptool.errors import CaptureFormatError

GOLDEN = Path(__file__).resolve().parent / "golden"
FRAMES = [bytes([i]) * (60 + i) for i in range(5)]
T0 = 1_700_000_000_123_456_789


def pcap_bytes(nanosecond: bool = True) -> bytes:
    buf = io.BytesIO()
    w = PcapWriter(buf, LINKTYPE_ETHERNET, 65535, nanosecond=nanosecond)
    for i, frame in enumerate(FRAMES):
        w.write(T0 + i, frame, wirelen=len(frame) + 10)
    return buf.getvalue()


def read_all(data: bytes) -> list[Packet]:
    return list(CaptureReader(open_input(io.BytesIO(data))))


class OneByteAtATime(io.RawIOBase):
    """A pipe that hands out one byte per read: the reader must never seek or assume more."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.pos >= len(self.data):
            return 0
        b[0] = self.data[self.pos]
        self.pos += 1
        return 1


def test_pcap_round_trip_keeps_nanoseconds_and_lengths() -> None:
    packets = read_all(pcap_bytes())
    assert [p.data for p in packets] == FRAMES
    assert [p.ts_ns for p in packets] == [T0 + i for i in range(5)]
    assert [p.wirelen for p in packets] == [len(f) + 10 for f in FRAMES]


def test_microsecond_pcap_rounds_down_to_microseconds() -> None:
    packets = read_all(pcap_bytes(nanosecond=False))
    assert packets[0].ts_ns == T0 // 1000 * 1000


def test_pcapng_round_trip_with_named_interfaces() -> None:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    a = w.add_interface(LINKTYPE_ETHERNET, 65535, "eth0")
    b = w.add_interface(LINKTYPE_RAW, 1500, "tun0")
    w.write(a, T0, b"\x01" * 61)
    w.write(b, T0 + 1, b"\x45" + b"\0" * 22, wirelen=40)
    reader = CaptureReader(io.BytesIO(buf.getvalue()))
    packets = list(reader)
    assert [(p.iface, p.linktype, p.ts_ns) for p in packets] == [(0, 1, T0), (1, 101, T0 + 1)]
    assert [i.name for i in reader.interfaces] == ["eth0", "tun0"]
    assert packets[1].wirelen == 40 and packets[1].caplen == 23


def test_reader_works_on_a_pipe_one_byte_at_a_time() -> None:
    stream = io.BufferedReader(OneByteAtATime(pcap_bytes()), buffer_size=1)
    assert [p.data for p in CaptureReader(stream)] == FRAMES


def test_gzip_is_detected_by_magic_even_on_a_pipe() -> None:
    data = gzip.compress(pcap_bytes())
    stream = open_input(io.BufferedReader(OneByteAtATime(data), buffer_size=1))
    assert [p.data for p in CaptureReader(stream)] == FRAMES


def test_concatenated_streams_are_read_on_and_counted_as_sections() -> None:
    reader = CaptureReader(io.BytesIO(pcap_bytes() + pcap_bytes(nanosecond=False)))
    sections = [(reader.section, p.data) for p in reader]
    assert [s for s, _ in sections] == [0] * 5 + [1] * 5


def test_cut_short_yields_every_packet_before_the_break() -> None:
    data = pcap_bytes()[:-7]
    got = []
    with pytest.raises(CaptureFormatError, match="cut short in packet record 5"):
        for p in CaptureReader(io.BytesIO(data), "x.pcap"):
            got.append(p)
    assert [p.data for p in got] == FRAMES[:4]


def test_corrupt_record_length_is_reported() -> None:
    data = bytearray(pcap_bytes())
    struct.pack_into("<I", data, 24 + 8, 10_000_000)
    with pytest.raises(CaptureFormatError, match="corrupt packet record 1"):
        read_all(bytes(data))


def test_not_a_capture_and_empty_input() -> None:
    with pytest.raises(CaptureFormatError, match="not a pcap or pcapng"):
        read_all(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(CaptureFormatError, match="empty input"):
        read_all(b"")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_tshark_reads_what_the_writers_write(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"out.{fmt}"
    src = list(read_packets(GOLDEN / "tcp_vlan_v6.pcap"))
    with path.open("wb") as f:
        if fmt == "pcap":
            w = PcapWriter(f, LINKTYPE_ETHERNET)
            for p in src:
                w.write(p.ts_ns, p.data)
        else:
            w = PcapngWriter(f)
            i = w.add_interface(LINKTYPE_ETHERNET, name="eth0")
            for p in src:
                w.write(i, p.ts_ns, p.data)
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.len",
            "-e",
            "frame.interface_name",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(out) == len(src)
    for line, p in zip(out, src, strict=True):
        epoch, length, *iface = line.split("\t")
        assert epoch.replace(".", "").lstrip("0") == str(p.ts_ns)
        assert int(length) == len(p.data)
        if fmt == "pcapng":
            assert iface == ["eth0"]


@pytest.mark.skipif(not corpus_files(), reason="../shared/corpus is absent")
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize(
    "name",
    [
        "tcpdump-pptp-bigendian.pcap",
        "gopacket-pcapng-bigendian.pcapng",
        "tcpdump-tcp-handshake-nano.pcap",
        "zeek-http-chunked.pcapng",
        "gopacket-pcapng-multi-idb.pcapng",
    ],
)
def test_timestamps_and_lengths_equal_tshark(corpus: Path, name: str) -> None:
    path = corpus / name
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.len",
        ],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    packets = list(read_packets(path))
    assert len(packets) == len(out)
    for line, p in zip(out, packets, strict=True):
        epoch, caplen, wirelen = line.split("\t")
        sec, frac = epoch.split(".")
        assert int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]) == p.ts_ns
        assert (int(caplen), int(wirelen)) == (p.caplen, p.wirelen)


def test_translate_reads_stdin(tmp_path: Path) -> None:
    data = (GOLDEN / "dns_tls.pcap").read_bytes()
    piped = run_pcaptool("translate", input=data)
    named = run_pcaptool("translate", "-", input=data)
    from_file = run_pcaptool("translate", str(GOLDEN / "dns_tls.pcap"))
    assert piped.returncode == named.returncode == 0
    assert piped.stdout == named.stdout
    assert piped.stdout.replace(b'"file":"-"', b'"file":"dns_tls.pcap"') == from_file.stdout
