"""Hostile capture files: every block type with every length field short or huge, absurd
time stamps, 4 GB record claims and cut gzip streams, through each consumer of the one
framer (reader, rotate, merge). Nothing but a one-line CaptureFormatError may come out,
memory stays bounded, and the work stays linear in the input."""

from __future__ import annotations

import gzip
import io
import shutil
import struct
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_pcaptool
from pcaptool.capfile.format import MAX_RECORD, MAX_TS_NS
from pcaptool.capfile.reader import CaptureReader, PcapngWriter, PcapWriter, open_input
from pcaptool.errors import CaptureFormatError
from pcaptool.merge import Part, merge_captures
from pcaptool.sidecar.rotate import CaptureFramer
from pcaptool.translate.serial import Translator

FRAME = bytes(14) + b"\x45" + bytes(40)
T0 = 1_700_000_000_000_000_000

SHB, IDB, PB, SPB, NRB, ISB, EPB, CUSTOM = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 0xBAD


def block(btype: int, body: bytes, blen: int | None = None, trail: int | None = None) -> bytes:
    body += b"\0" * (-len(body) & 3)
    n = len(body) + 12
    head = n if blen is None else blen
    return struct.pack("<II", btype, head) + body + struct.pack("<I", n if trail is None else trail)


def shb() -> bytes:
    return block(SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(options: bytes = b"", snaplen: int = 65535) -> bytes:
    return block(IDB, struct.pack("<HHI", 1, 0, snaplen) + options)


def option(code: int, value: bytes, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    return struct.pack("<HH", code, n & 0xFFFF) + value + b"\0" * (-len(value) & 3)


def epb(ts: int = T0, data: bytes = FRAME, incl: int | None = None, orig: int | None = None):
    head = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    if incl is not None or orig is not None:
        head = struct.pack(
            "<IIIII",
            0,
            ts >> 32,
            ts & 0xFFFFFFFF,
            len(data) if incl is None else incl,
            len(data) if orig is None else orig,
        )
    return head + data


def spb(data: bytes = FRAME, orig: int | None = None) -> bytes:
    return struct.pack("<I", len(data) if orig is None else orig) + data


def pb(ts: int = T0, data: bytes = FRAME, incl: int | None = None) -> bytes:
    n = len(data) if incl is None else incl
    return struct.pack("<HHIIII", 0, 0, ts >> 32, ts & 0xFFFFFFFF, n, len(data)) + data


def pcap(records: list[tuple[int, int, bytes]], snaplen: int = 65535) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1)
    for incl, orig, data in records:
        out += struct.pack("<IIII", T0 // 10**9, 0, incl, orig) + data
    return out


# -- each consumer ------------------------------------------------------------------------


def read_all(data: bytes) -> tuple[int, str | None]:
    """Packets read, and the error (None if the capture read clean)."""
    n = 0
    try:
        for rec in Translator("limits").records(CaptureReader(open_input(io.BytesIO(data)))):
            assert rec["message"]
            n += 1
    except CaptureFormatError as exc:
        return n, str(exc)
    return n, None


def frame_all(data: bytes, step: int) -> tuple[int, str | None]:
    framer, n = CaptureFramer("limits"), 0
    try:
        for i in range(0, len(data), step):
            for kind, _ in framer.feed(data[i : i + step]):
                n += kind == "record"
        framer.close()
    except CaptureFormatError as exc:
        return n, str(exc)
    return n, None


def merge_all(data: bytes, fmt: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="framing-limits-") as tmp:
        path = Path(tmp) / "in.pcapng"
        path.write_bytes(data)
        try:
            merge_captures([Part(str(path), str(path))], io.BytesIO, fmt=fmt)
        except CaptureFormatError as exc:
            return str(exc)
    return None


def check_every_consumer(data: bytes) -> None:
    """Reader, rotate's framer (fed in pieces of several sizes) and merge agree, in one line."""
    n, err = read_all(data)
    assert err is None or "\n" not in err
    for step in (1, 7, 4096):
        got, framer_err = frame_all(data, step)
        assert got == n and (framer_err is None) == (err is None), (step, err, framer_err)
    for fmt in ("pcap", "pcapng"):
        merged = merge_all(data, fmt)
        assert (merged is None) == (err is None) and (merged is None or "\n" not in merged)


# -- every block type, every length field ---------------------------------------------------

SHORT_OR_HUGE = st.sampled_from(
    [0, 1, 3, 4, 8, 11, 12, 15, 16, 19, 20, 27, 28, 31, 32, MAX_RECORD + 1, 1 << 31, 0xFFFFFFFF]
)
BLOCKS = {
    IDB: lambda: struct.pack("<HHI", 1, 0, 65535),
    EPB: epb,
    SPB: spb,
    PB: pb,
    NRB: lambda: b"\0\0\0\0",
    ISB: lambda: struct.pack("<III", 0, 0, 0),
    CUSTOM: lambda: b"x" * 8,
    SHB: lambda: struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(BLOCKS)),
    st.sampled_from(["blen", "trail", "both", "body_cut"]),
    SHORT_OR_HUGE,
    st.booleans(),
)
def test_block_length_fields_short_or_huge(btype, field, value, more_after) -> None:
    body = BLOCKS[btype]()
    if field == "body_cut":
        body = body[: value % (len(body) + 1)]
        bad = block(btype, body)
    else:
        bad = block(
            btype,
            body,
            blen=value if field in ("blen", "both") else None,
            trail=value if field in ("trail", "both") else None,
        )
    data = shb() + idb() + block(EPB, epb()) + bad
    if more_after:
        data += block(EPB, epb(T0 + 1)) * 3
    check_every_consumer(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["epb_incl", "epb_orig", "spb_orig", "pb_incl", "idb_snaplen", "opt_len"]),
    SHORT_OR_HUGE,
)
def test_inner_length_fields_short_or_huge(field, value) -> None:
    head = shb() + idb(snaplen=value if field == "idb_snaplen" else 65535)
    if field == "opt_len":
        head = shb() + idb(option(2, b"eth0", value) + option(9, b"\x09"))
    body = {
        "epb_incl": lambda: block(EPB, epb(incl=value)),
        "epb_orig": lambda: block(EPB, epb(orig=value)),
        "spb_orig": lambda: block(SPB, spb(orig=value)),
        "pb_incl": lambda: block(PB, pb(incl=value)),
    }.get(field, lambda: block(EPB, epb()))()
    check_every_consumer(head + body + block(EPB, epb(T0 + 5)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["snaplen", "incl", "orig"]), SHORT_OR_HUGE, st.booleans())
def test_pcap_length_fields_short_or_huge(field, value, more_after) -> None:
    rec = (
        value if field == "incl" else len(FRAME),
        value if field == "orig" else len(FRAME),
        FRAME,
    )
    records = [(len(FRAME), len(FRAME), FRAME), rec]
    if more_after:
        records += [(len(FRAME), len(FRAME), FRAME)] * 3
    check_every_consumer(pcap(records, snaplen=value if field == "snaplen" else 65535))


def test_short_blocks_are_one_line_format_errors() -> None:
    for btype, fixed in ((EPB, 32), (SPB, 16), (PB, 32), (IDB, 20)):
        data = shb() + idb() + block(btype, b"", blen=fixed - 4, trail=fixed - 4)
        n, err = read_all(data)
        assert err and "fixed fields need" in err and "\n" not in err, (btype, err)


# -- absurd time stamps -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "ts"),
    [
        (option(9, b"\x00"), (1 << 64) - 1),  # seconds, the largest count
        (option(9, b"\x7f"), (1 << 64) - 1),  # 10^-127 s
        (option(9, b"\xff"), (1 << 64) - 1),  # 2^-127 s
        (option(14, struct.pack("<q", 1 << 62)), T0),
        (option(14, struct.pack("<q", -(1 << 62))), T0),
        (option(9, b"\x00") + option(14, struct.pack("<q", -(1 << 62))), 5),
    ],
)
def test_time_stamps_out_of_range_are_clamped(options, ts, tmp_path) -> None:
    data = shb() + idb(options) + block(EPB, epb(ts))
    n, err = read_all(data)
    assert (n, err) == (1, None)
    [pkt] = list(CaptureReader(io.BytesIO(data)))
    assert 0 <= pkt.ts_ns <= MAX_TS_NS
    for fmt in ("pcap", "pcapng"):
        assert merge_all(data, fmt) is None
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=data)
    assert res.returncode == 0, res.stderr
    res = run_pcaptool("translate", "-", input=data)
    assert res.returncode == 0 and res.stdout.count(b"\n") == 1, res.stderr


def test_writers_clamp_what_their_fields_cannot_hold() -> None:
    for ts in (-1, 1 << 70):
        out = io.BytesIO()
        PcapWriter(out, 1).write(ts, FRAME)
        w = PcapngWriter(out := io.BytesIO())
        w.write(w.add_interface(1), ts, FRAME)
        [pkt] = list(CaptureReader(io.BytesIO(out.getvalue())))
        assert pkt.ts_ns == (0 if ts < 0 else MAX_TS_NS)


# -- 4 GB claims, memory and time -----------------------------------------------------------


def test_a_record_claiming_4gb_is_refused_at_once_by_every_consumer(tmp_path) -> None:
    data = pcap([(len(FRAME), len(FRAME), FRAME), (0xFFFFFFF0, 0xFFFFFFF0, bytes(1 << 20))])
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFFFFFF, 1) + data[24:]
    tracemalloc.start()
    try:
        assert read_all(data)[0] == 1
        assert "exceeds the limit 262144" in read_all(data)[1]
        assert frame_all(data, 4096)[1]
        assert merge_all(data, "pcap")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    for cmd in (("translate", "-"), ("rotate", "--dir", str(tmp_path / "r"))):
        res = run_pcaptool(*cmd, input=data)
        assert res.returncode == 1 and res.stderr.count(b"\n") == 1, (cmd, res.stderr)
    (tmp_path / "big.pcap").write_bytes(data)
    res = run_pcaptool("merge", str(tmp_path / "big.pcap"), "-o", str(tmp_path / "m.pcap"))
    assert res.returncode == 1 and res.stderr.count(b"\n") == 1, res.stderr


def _feed_time(size: int, step: int) -> tuple[float, int]:
    """Seconds and peak bytes to frame one SIZE-byte pcapng block fed STEP bytes at a time."""
    data = shb() + block(CUSTOM, bytes(size - 12))
    framer = CaptureFramer()
    tracemalloc.start()
    t0 = time.perf_counter()
    units = 0
    for i in range(0, len(data), step):
        units += sum(1 for _ in framer.feed(data[i : i + step]))
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    framer.close()
    assert units == 2
    return elapsed, peak


def test_framing_a_growing_block_is_linear_in_time_and_memory() -> None:
    # Fed 1 KiB at a time, the old framer joined what it held to each new piece:
    # quadratic, 16 MB took minutes. Now pieces are kept and joined once.
    small_t, small_m = _feed_time(1 << 20, 1024)
    big_t, big_m = _feed_time(16 << 20, 1024)
    assert big_m < 3 * (16 << 20) + (1 << 20)
    assert big_t < max(40 * small_t, 0.5) and big_t < 5


# -- a gzip capture cut short -------------------------------------------------------------


def _tshark_count(path: Path) -> int:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        timeout=120,
    )
    return len(out.stdout.split())


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.93])
def test_cut_gzip_keeps_every_packet_before_the_cut(tmp_path, fraction) -> None:
    out = io.BytesIO()
    w = PcapWriter(out, 1)
    for i in range(30_000):
        w.write(T0 + i * 1000, FRAME + i.to_bytes(4, "big") * 20)
    whole = gzip.compress(out.getvalue(), 6)
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(whole[: int(len(whole) * fraction)])
    want = _tshark_count(cut)
    assert 0 < want < 30_000
    got = 0
    with pytest.raises(CaptureFormatError, match="cut short"):
        for _ in CaptureReader(open_input(cut), str(cut)):
            got += 1
    assert got == want
    res = run_pcaptool("translate", str(cut))
    assert res.returncode == 1
    assert res.stdout.count(b"\n") == want
    assert res.stderr.count(b"\n") == 1 and b"Traceback" not in res.stderr


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(0, 9 << 20), min_size=1, max_size=3),
    st.integers(1, 1 << 20),
    st.booleans(),
)
def test_gzip_members_read_back_exactly(sizes, read_size, padded) -> None:
    # sizes around the decompressor's step limits, several members, zero padding between
    members, plain = [], b""
    for i, size in enumerate(sizes):
        data = (bytes(range(256)) * (size // 256 + 1))[:size]
        data = bytes(b ^ (j * 7 + i) & 0xFF for j, b in enumerate(data[:4096])) + data[4096:]
        plain += data
        members.append(gzip.compress(data, 1) + (b"\0" * 8 if padded else b""))
    stream = open_input(io.BytesIO(b"".join(members)))
    got = []
    while chunk := stream.read1(read_size):
        got.append(chunk)
    assert b"".join(got) == plain
