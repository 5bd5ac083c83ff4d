"""Merge NDJSON parts (pcaptool's own records) by `pcap.date`, then `pcap.num`."""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import BinaryIO

from pcaptool.capfile.streams import DECOMPRESS_ERRORS, open_input
from pcaptool.errors import CaptureFormatError
from pcaptool.merge.parts import MergeResult, Part


@lru_cache(maxsize=4096)
def _epoch_seconds(stamp: str, zone: str) -> int:
    when = datetime.fromisoformat(stamp + ("+00:00" if zone in ("Z", "z") else zone))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def rfc3339_ns(text: str) -> int:
    """`2024-05-01T12:00:00.123456789Z` (any fraction, Z or ±HH:MM) -> integer ns."""
    stamp, rest = text[:19], text[19:]
    frac = 0
    if rest[:1] == ".":
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        frac = int(rest[1:end][:9].ljust(9, "0"))
        rest = rest[end:]
    return _epoch_seconds(stamp, rest or "Z") * 1_000_000_000 + frac


def _ndjson_records(
    part: Part, idx: int, skip_bad: bool, warn: Callable[[str], None], result: MergeResult
) -> Iterator[tuple[tuple[int, int], int, bytes]]:
    import orjson

    from pcaptool.record.export import record_lines, sort_key

    stream = open_input(sys.stdin.buffer if part.path == "-" else part.path)
    lineno = 0
    try:
        for line in record_lines(stream):  # pcaptool NDJSON, or exported LogEntry JSON
            lineno += 1
            if not line.strip():
                continue
            try:
                key = sort_key(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                why = f"{part.name}: line {lineno} is not a pcaptool NDJSON record ({exc})"
                if not skip_bad:
                    raise CaptureFormatError(why) from None
                result.skipped.append((part.name, why))
                warn(f"{why}; skipped this line")
                continue
            yield (key, idx, line if line.endswith(b"\n") else line + b"\n")
    except DECOMPRESS_ERRORS as exc:
        raise CaptureFormatError(
            f"{part.name}: compressed data is corrupt or cut short after line {lineno} ({exc})"
        ) from None
    finally:
        if part.path != "-":
            stream.close()


def merge_ndjson(
    parts: list[Part],
    open_output: Callable[[], BinaryIO],
    append: bool = False,
    skip_bad: bool = False,
    warn: Callable[[str], None] = lambda msg: None,
) -> MergeResult:
    """Merge NDJSON parts into one stream ordered by `pcap.date`, then `pcap.num`.

    Ties keep input order; memory holds one line per input.
    """
    result = MergeResult(format="ndjson", inputs=len(parts))
    out = open_output()
    write = out.write
    sources = [_ndjson_records(p, i, skip_bad, warn, result) for i, p in enumerate(parts)]
    if append:
        for i, src in enumerate(sources):
            try:
                for _key, _i, line in src:
                    write(line)
                    result.packets += 1
            except CaptureFormatError as exc:
                _ndjson_bad(parts[i], exc, skip_bad, out, result, warn)
        out.flush()
        return result
    heap = []
    for i, src in enumerate(sources):
        try:
            heap.append(next(src))
        except StopIteration:
            pass
        except CaptureFormatError as exc:
            _ndjson_bad(parts[i], exc, skip_bad, out, result, warn)
    heapq.heapify(heap)
    nexts = [s.__next__ for s in sources]
    while heap:
        idx = heap[0][1]
        try:
            while heap:
                _key, idx, line = heap[0]
                write(line)
                result.packets += 1
                heapq.heapreplace(heap, nexts[idx]())
        except StopIteration:
            heapq.heappop(heap)
        except CaptureFormatError as exc:
            heapq.heappop(heap)
            _ndjson_bad(parts[idx], exc, skip_bad, out, result, warn)
    out.flush()
    return result


def _ndjson_bad(part, exc, skip_bad, out, result, warn) -> None:
    if not skip_bad:
        out.flush()
        raise exc
    result.skipped.append((part.name, str(exc)))
    warn(f"{exc}; skipped the rest of this part")
