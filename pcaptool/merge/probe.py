"""Probing merge inputs: each part's header and first time stamp, read once, then closed.

A part is opened again only when its first packet is due (lazy opening), so a merge of
thousands of rotated parts keeps only a few files open at a time. Stdin cannot be opened
twice: what the probe read is kept and served again before the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from pcaptool.capfile.reader import CaptureReader
from pcaptool.capfile.streams import Prefixed, open_input
from pcaptool.errors import CaptureFormatError, UsageError
from pcaptool.merge.parts import MergeResult, Part
from pcaptool.merge.sources import linktype_name


class _Recorder:
    """Keeps what a probe read from stdin, so the merge can read it again."""

    def __init__(self, stream: BinaryIO) -> None:
        self._read = getattr(stream, "read1", stream.read)
        self.stream = stream
        self.seen: list[bytes] = []

    def read1(self, n: int = -1) -> bytes:
        chunk = self._read(n)
        self.seen.append(chunk)
        return chunk

    read = read1


@dataclass
class Probe:
    part: Part
    format: str  # "pcap" | "pcapng"
    first_ts: int | None  # None: no packet
    interfaces: list[tuple[int, int, str | None]]  # (linktype, snaplen, name) of section 0
    nanosecond: bool
    stdin_prefix: Prefixed | None = None
    # a copiable custom block comes before the first packet: it has no time, and
    # mergecap writes such a block as soon as it reads it, i.e. first
    leading_block: bool = False


def probe(part: Part) -> Probe:
    """Open a part, read its header(s) and first packet, and close it again."""
    source = sys.stdin.buffer if part.path == "-" else part.path
    stream = open_input(source)
    recorder = _Recorder(stream) if part.path == "-" else None
    try:
        reader = CaptureReader(recorder or stream, part.name)
        first = next(iter(reader), None)
        interfaces = [(i.linktype, i.snaplen, i.name) for i in reader.interfaces]
        probe = Probe(
            part,
            reader.format or "pcap",
            first.ts_ns if first else None,
            interfaces,
            reader.nanosecond,
            leading_block=reader.framer.copiable > 0,
        )
        if recorder is not None:
            probe.stdin_prefix = Prefixed(b"".join(recorder.seen), stream)
        return probe
    finally:
        if recorder is None:
            stream.close()


def open_again(probe: Probe) -> BinaryIO:
    if probe.stdin_prefix is not None:
        return probe.stdin_prefix  # type: ignore[return-value]
    return open_input(probe.part.path)


def choose_format(probes: list[Probe], requested: str | None) -> str:
    linktypes = {lt for p in probes for lt, _, _ in p.interfaces}
    if requested == "pcap" and len(linktypes) > 1:
        names = ", ".join(linktype_name(lt) for lt in sorted(linktypes))
        raise UsageError(
            f"the inputs have different link types ({names}); pcap holds one: "
            "use --format pcapng (or leave --format out)"
        )
    if requested:
        return requested
    # pcap when that loses nothing: one link type and no pcapng input (whose interface
    # names, comments and resolutions pcap cannot hold)
    if len(linktypes) > 1 or any(p.format == "pcapng" for p in probes):
        return "pcapng"
    return "pcap"


def probe_parts(
    parts: list[Part], skip_bad: bool, warn: Callable[[str], None], result: MergeResult
) -> list[Probe]:
    """Probe every part; a bad one is an error, or with `skip_bad` a warning."""
    probes = []
    for part in parts:
        try:
            probes.append(probe(part))
        except CaptureFormatError as exc:
            if not skip_bad:
                raise
            result.skipped.append((part.name, str(exc)))
            warn(f"{exc}; skipped this part")
    return probes
