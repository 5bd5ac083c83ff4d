"""Coverage-guided fuzzing (atheris/libFuzzer) of the whole packet -> record path.

Run by tests/test_fuzz_coverage.py as `python tests/fuzz_translate.py CORPUS_DIR
-max_total_time=60 ...`. An input is either a capture file (first byte odd: the
reader, the translator and the TCP/HTTP analysis) or a link type and packets (first byte
even: byte 1 picks the link type, then 2-byte length-prefixed frames fed to one
Translator with the HTTP analyzer, so connection state carries across packets). The only
exception allowed is CaptureFormatError from the reader; anything else is a crash.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports():
    from pcaptool.capfile.reader import CaptureReader, Packet
    from pcaptool.errors import CaptureFormatError
    from pcaptool.tcp.analyzer import HttpAnalyzer
    from pcaptool.translate.serial import Translator

LINKTYPES = (1, 0, 101, 108, 113, 228, 229, 276, 12)


def encode(linktype: int, frames: list[bytes]) -> bytes:
    """The packet-mode input for these frames (used to write the seed corpus)."""
    out = bytes([0, LINKTYPES.index(linktype)])
    return out + b"".join(struct.pack("!H", len(f)) + f for f in frames)


def packets(data: bytes):
    linktype = LINKTYPES[data[1] % len(LINKTYPES)] if len(data) > 1 else 1
    pos, ts = 2, 1_700_000_000_000_000_000
    while pos + 2 <= len(data):
        size = struct.unpack_from("!H", data, pos)[0]
        frame = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
        ts += 1_000_000
        yield Packet(ts, len(frame), len(frame) + (size & 1), frame, 0, linktype)


def one_input(data: bytes) -> None:
    if not data:
        return
    translator = Translator("fuzz", HttpAnalyzer(flows=True))
    if data[0] & 1:
        try:
            for rec in translator.records(CaptureReader(io.BytesIO(data[1:]), "fuzz")):
                assert rec["message"]
        except CaptureFormatError:
            pass
        return
    for rec in translator.records(packets(data)):
        assert rec["message"]


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
