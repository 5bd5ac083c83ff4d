"""Merge capture parts (pcap/pcapng, gzip or plain) or NDJSON parts into one stream.

The capture merge is a streaming k-way merge by time stamp whose output equals
`mergecap -w` packet for packet (checked against mergecap 4.0 in tests/test_merge.py):
- on equal time stamps the input given *last* goes first: Wireshark's
  `merge_read_packet()` scans the inputs in order and its `is_earlier()` counts an equal
  time as earlier, so the last input holding the smallest time stamp wins;
- within one input the packet order is kept, even where its time goes backwards.
`_merge` gets this by sorting batches on a running-maximum key (see there), so the work
per packet runs in C. Memory grows with the number of inputs open at once, not their size.

What keeps it fast and bounded: raw copies of records where the format allows
(`sources.py`), and lazy opening (`probe.py`): a merge of thousands of rotated parts keeps
only a few files open at a time.

A part that breaks in the middle ends the merge with what was written so far (what
`mergecap` does, exit 1), or with `skip_bad` is reported and left out from that point on.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator
from itertools import chain
from operator import itemgetter
from typing import BinaryIO

from pcaptool.capfile.format import MAX_RECORD
from pcaptool.capfile.writer import PcapngWriter, PcapWriter
from pcaptool.errors import CaptureFormatError, PcapToolError
from pcaptool.merge.parts import MergeResult, Part
from pcaptool.merge.probe import Probe, choose_format, open_again, probe_parts
from pcaptool.merge.sources import OutputInterfaces, pcap_batches, pcapng_batches

# Read size per open input: large for a few inputs, smaller when many are open at once.
_READ_BUDGET = 8 << 20

_KEY, _RECORD = itemgetter(0), itemgetter(1)


def _merge(
    probes: list[Probe],
    source: Callable[[int], Iterator[list[tuple[int, bytes]]]],
    write: Callable[[bytes], object],
    bad: Callable[[int, CaptureFormatError], None],
    unit_ns: int = 1,
) -> int:
    """Merge the inputs in batches; returns the number of packets written.

    The merge key of a record is `high * n + (n - 1 - i)` for input i of n, where `high`
    is the largest time stamp of input i up to and including the record, counted in
    units of UNIT_NS (the output's resolution). Sorting by it
    (stably) is exactly mergecap's head-by-head merge: an input's packets never pass each
    other; on equal times the input given last goes first; and a packet whose time is
    earlier than one before it in the same input follows that one at once, which is what
    repeatedly taking the earliest head of every input does. Sorting lets the work per
    packet run in C: a round takes every buffered record up to the horizon H (the
    smallest last key among the inputs' buffered batches, below which no input can
    still deliver), sorts them, and writes them in one call. The input that set H then
    reads its next batch, so a broken input stops the merge right after its last good
    packet, as in mergecap.
    """
    n = len(probes)
    # inputs not opened yet, by the key of their first packet (lazy opening)
    waiting = [
        (i - n if p.leading_block else p.first_ts // unit_ns * n + n - 1 - i, i)
        for i, p in enumerate(probes)
        if p.first_ts is not None or p.leading_block
    ]
    heapq.heapify(waiting)
    batches: dict[int, Iterator[list[tuple[int, bytes]]]] = {}
    pending: dict[int, list[tuple[int, bytes]]] = {}  # i -> buffered records, never empty
    written = 0

    def refill(i: int) -> None:
        try:
            for batch in batches[i]:
                if batch:
                    pending[i] = batch
                    return
        except CaptureFormatError as exc:
            del batches[i]
            bad(i, exc)  # raises unless --skip-bad
            return
        del batches[i]

    while pending or waiting:
        horizon = min(p[-1][0] for p in pending.values()) if pending else None
        if waiting and (horizon is None or waiting[0][0] <= horizon):
            i = heapq.heappop(waiting)[1]
            try:
                batches[i] = source(i)
            except CaptureFormatError as exc:
                bad(i, exc)
                continue
            refill(i)
            continue
        out, drained = _take(pending, horizon)
        write(b"".join(map(_RECORD, out)))
        written += len(out)
        for i in drained:
            del pending[i]
            refill(i)
    return written


def _take(pending: dict[int, list[tuple[int, bytes]]], horizon: int):
    """Every buffered record up to `horizon`, in merge order, and the inputs it drained."""
    pieces: list[list[tuple[int, bytes]]] = []
    drained = []
    for i, p in pending.items():
        if p[-1][0] <= horizon:
            drained.append(i)
            pieces.append(p)
        else:
            k = bisect.bisect_right(p, horizon, key=_KEY)
            if k:
                pieces.append(p[:k])
                pending[i] = p[k:]
    if len(pieces) == 1:
        return pieces[0], drained  # parts that do not overlap in time: nothing to sort
    out = list(chain.from_iterable(pieces))
    out.sort(key=_KEY)  # stable: one input's records keep their order
    return out, drained


def merge_captures(
    parts: list[Part],
    open_output: Callable[[], BinaryIO],
    fmt: str | None = None,
    append: bool = False,
    skip_bad: bool = False,
    warn: Callable[[str], None] = lambda msg: None,
) -> MergeResult:
    """Merge capture PARTS into the stream `open_output()` returns (called once probed).

    fmt: "pcap", "pcapng" or None (pcap when every input is pcap of one link type).
    append: concatenate in the given order instead of merging by time (`mergecap -a`).
    """
    result = MergeResult()
    probes = probe_parts(parts, skip_bad, warn, result)
    if not probes:
        raise PcapToolError("nothing to merge: no readable capture among the inputs")
    result.format = fmt = choose_format(probes, fmt)
    result.inputs = len(probes)
    out = open_output()
    n = len(probes)
    chunk = max(64 << 10, min(128 << 10, _READ_BUDGET // n))
    nanosecond = any(p.nanosecond for p in probes)

    if fmt == "pcap":
        linktype = next((p.interfaces[0][0] for p in probes if p.interfaces), 1)
        snaplen = max((s or MAX_RECORD for p in probes for _, s, _ in p.interfaces), default=0)
        PcapWriter(out, linktype, snaplen or MAX_RECORD, nanosecond=nanosecond)

        def source(i: int) -> Iterator[list[tuple[int, bytes]]]:
            p = probes[i]
            return pcap_batches(open_again(p), p.part.name, i, n, linktype, nanosecond, chunk)

    else:
        interfaces = OutputInterfaces(PcapngWriter(out))
        keys: dict[tuple[int, str | None], int] = {}
        for p in probes:
            for lt, snap, ifname in p.interfaces:
                keys[(lt, ifname)] = max(keys.get((lt, ifname), 0), snap or MAX_RECORD)
        interfaces.declare(keys)

        def source(i: int) -> Iterator[list[tuple[int, bytes]]]:
            p = probes[i]
            return pcapng_batches(open_again(p), p.part.name, i, n, interfaces, chunk)

    def bad(i: int, exc: CaptureFormatError) -> None:
        if not skip_bad:
            out.flush()
            raise exc
        result.skipped.append((probes[i].part.name, str(exc)))
        warn(f"{exc}; skipped the rest of this part")

    write = out.write
    if append:
        for i in range(len(probes)):
            if probes[i].first_ts is None and not probes[i].leading_block:
                continue
            try:
                for batch in source(i):
                    write(b"".join(map(_RECORD, batch)))
                    result.packets += len(batch)
            except CaptureFormatError as exc:
                bad(i, exc)
    else:
        unit_ns = 1000 if fmt == "pcap" and not nanosecond else 1
        result.packets = _merge(probes, source, write, bad, unit_ns)
    out.flush()
    return result
