"""hypothesis: no bytes, random or mutated from real captures, make the reader or the
translator raise anything but the project's own CaptureFormatError."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import corpus_files
from pcaptool.capfile.reader import CaptureReader, Packet
from pcaptool.errors import CaptureFormatError
from pcaptool.translate.serial import Translator

GOLDEN = Path(__file__).resolve().parent / "golden"
SEEDS = [p.read_bytes() for p in sorted(GOLDEN.glob("*.pcap*")) if not p.name.endswith(".gz")]
SEEDS += [
    p.read_bytes()
    for p in corpus_files()
    if p.stat().st_size < 30_000 and not p.name.endswith(".gz")
]
LINKTYPES = [0, 1, 101, 108, 113, 228, 229, 276, 12345]


def translate_all(data: bytes) -> int:
    translator = Translator("fuzz")
    n = 0
    try:
        for rec in translator.records(CaptureReader(io.BytesIO(data), "fuzz")):
            assert rec["message"]
            n += 1
    except CaptureFormatError:
        pass
    return n


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    translate_all(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12),
    st.integers(0, 1 << 20),
)
def test_mutated_real_captures(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    translate_all(bytes(data[: max(cut, 24)]))


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(LINKTYPES), st.binary(max_size=256))
def test_random_packets_of_every_link_type(linktype: int, frame: bytes) -> None:
    rec = Translator("fuzz").translate(1, Packet(0, len(frame), len(frame), frame, 0, linktype))
    assert rec["severity"] in ("DEFAULT", "ERROR")
    assert ("error" in rec) == (rec["severity"] == "ERROR")
