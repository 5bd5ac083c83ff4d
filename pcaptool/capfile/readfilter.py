"""A read filter: the BPF expression `tcpdump -r FILE EXPR` applies, on packets as read.

The expression is compiled by libpcap (pcapy-ng's `compile`) once per link type met, so a
pcapng file whose interfaces differ in link type is filtered as tcpdump filters each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pcaptool.capfile.reader import Packet
from pcaptool.errors import UsageError

# tcpdump's snap length for -s 0, and what it compiles offline filters with
WHOLE_PACKET = 262144


def check_expression(expression: str, linktype: int = 1) -> None:
    """Refuse a bad expression before any input is read (one line, exit 2)."""
    _compile(expression, linktype)


def _compile(expression: str, linktype: int):
    import pcapy

    try:
        return pcapy.compile(linktype, WHOLE_PACKET, expression, 1, 0xFFFFFFFF)
    except pcapy.PcapError as exc:
        raise UsageError(f"bad filter expression {expression!r}: {exc}") from None


class ReadFilter:
    """Keeps the packets a BPF expression matches; `None` or '' keeps all."""

    def __init__(self, expression: str | None) -> None:
        self.expression = (expression or "").strip()
        self._programs: dict[int, object] = {}

    def __bool__(self) -> bool:
        return bool(self.expression)

    def matches(self, pkt: Packet) -> bool:
        prog = self._programs.get(pkt.linktype)
        if prog is None:
            prog = self._programs[pkt.linktype] = _compile(self.expression, pkt.linktype)
        return prog.filter(bytes(pkt.data)) != 0  # type: ignore[attr-defined]


def select_packets(
    packets: Iterable[Packet], expression: str | None = None, count: int = 0
) -> Iterator[Packet]:
    """The packets `expression` keeps, at most `count` of them (0: all), as `tcpdump -c`."""
    keep = ReadFilter(expression)
    kept = 0
    for pkt in packets:
        if keep and not keep.matches(pkt):
            continue
        yield pkt
        kept += 1
        if count and kept >= count:
            return


class FilteredReader:
    """A CaptureReader seen through a read filter and a count: same attributes, fewer packets."""

    def __init__(self, reader, expression: str | None, count: int) -> None:
        self._reader = reader
        self._keep = ReadFilter(expression)
        self._count = count
        self.kept = 0  # packets handed on so far: what is left of a -c shared by files

    def __getattr__(self, name: str):
        return getattr(self._reader, name)

    def __iter__(self) -> Iterator[Packet]:
        keep, count = self._keep, self._count
        for pkt in self._reader:
            if keep and not keep.matches(pkt):
                continue
            self.kept += 1
            yield pkt
            if count and self.kept >= count:
                return
