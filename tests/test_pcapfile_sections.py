"""CaptureReader on concatenated capture streams: `.section` counts each new file header."""

from __future__ import annotations

import io

import pytest

from pcaptool.capfile.reader import CaptureReader, PcapngWriter, PcapWriter, stream_header_at

T0 = 1_700_000_000_123_456_789


def _pcap(nanosecond: bool, n: int, seed: int) -> bytes:
    out = io.BytesIO()
    w = PcapWriter(out, 1, nanosecond=nanosecond)
    for i in range(n):
        w.write(T0 + i * 1000, bytes([seed, i]) * 30)
    return out.getvalue()


def _pcapng(n: int, seed: int) -> bytes:
    out = io.BytesIO()
    w = PcapngWriter(out)
    idx = w.add_interface(1, name=f"eth{seed}")
    for i in range(n):
        w.write(idx, T0 + i, bytes([seed, i]) * 30)
    return out.getvalue()


@pytest.mark.parametrize(
    "streams",
    [
        [("pcap", True), ("pcap", True)],
        [("pcap", False), ("pcapng", None), ("pcap", True)],
        [("pcapng", None), ("pcap", False)],
        [("pcapng", None), ("pcapng", None), ("pcapng", None)],
    ],
)
def test_each_new_header_is_a_new_section(streams):
    blobs, expected = [], []
    for k, (fmt, ns) in enumerate(streams):
        blob = _pcap(ns, 3 + k, k) if fmt == "pcap" else _pcapng(3 + k, k)
        blobs.append(blob)
        expected += [(k, fmt, bytes([k, i]) * 30) for i in range(3 + k)]
    reader = CaptureReader(io.BytesIO(b"".join(blobs)))
    got = [(reader.section, reader.format, p.data) for p in reader]
    assert got == expected


def test_a_timestamp_equal_to_a_magic_is_still_a_record():
    # sec == 0xA1B2C3D4 (year 2055): a record, since the next word is not version 2.
    out = io.BytesIO()
    w = PcapWriter(out, 1)
    w.write(0xA1B2C3D4 * 1_000_000_000 + 7, b"y" * 40)
    data = out.getvalue()
    assert stream_header_at(data, 24) is None
    packets = list(CaptureReader(io.BytesIO(data)))
    assert [(p.ts_ns, p.data) for p in packets] == [(0xA1B2C3D4 * 1_000_000_000 + 7, b"y" * 40)]
