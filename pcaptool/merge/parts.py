"""Merge capture parts (pcap/pcapng, gzip or plain) or NDJSON parts into one stream.

The capture merge is a streaming k-way merge by time stamp whose output equals
`mergecap -w` packet for packet (checked against mergecap 4.0 in tests/test_merge.py):
- on equal time stamps the input given *last* goes first: Wireshark's
  `merge_read_packet()` scans the inputs in order and its `is_earlier()` counts an equal
  time as earlier, so the last input holding the smallest time stamp wins;
- within one input the packet order is kept, even where its time goes backwards.
`_merge` gets this by sorting batches on a running-maximum key (see there), so the work
per packet runs in C. Memory grows with the number of inputs open at once, not their size.

What keeps it fast and bounded:
- raw paths: a little-endian pcap input of the output's resolution and link type is
  copied record by record (16-byte header + data, as read), and a little-endian pcapng
  input's enhanced packet blocks are copied into pcapng output (only the block head is
  rewritten when the interface number or the time unit changes);
- lazy opening: every input is probed once for its header and first time stamp and then
  closed; it is opened again only when its first packet is due. Rotated parts rarely
  overlap, so a merge of thousands of parts keeps only a few files open at a time.

A part that breaks in the middle ends the merge with what was written so far (what
`mergecap` does, exit 1), or with `skip_bad` is reported and left out from that point on.
"""

from __future__ import annotations

import bisect
import glob
import heapq
import os
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

from pcaptool.capfile.reader import (
    BLOCK_EPB,
    BLOCK_HEADER,
    BLOCK_IDB,
    BLOCK_PB,
    BLOCK_SPB,
    EPB_BODY,
    IDB_BODY,
    LINKTYPE_NAMES,
    MAX_BLOCK,
    MAX_RECORD,
    OPTION,
    PB_BODY,
    PCAP_HEADER,
    PCAP_MAGIC,
    PCAP_RECORD,
    PCAPNG_SHB,
    U32,
    CaptureReader,
    PcapngWriter,
    PcapWriter,
    open_input,
)
from pcaptool.errors import CaptureFormatError, PcapToolError, UsageError

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")
NDJSON_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz")
GLOB_CHARS = frozenset("*?[")

PCAP_MAGIC_US, PCAP_MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
_NEW_STREAM_WORDS = frozenset(PCAP_MAGIC) | {PCAPNG_SHB}
_PCAP_REC = PCAP_RECORD["<"]
_EPB_HEAD = BLOCK_HEADER["<"]
_EPB_BODY = EPB_BODY["<"]
_U32 = U32["<"]
# Read size per open input: large for a few inputs, smaller when many are open at once.
_READ_BUDGET = 8 << 20


def _decompress_errors() -> tuple[type[BaseException], ...]:
    # isal's IsalError (corrupt deflate data) is not an OSError; catch it by name.
    import zlib

    from isal import isal_zlib

    return (OSError, EOFError, ValueError, zlib.error, isal_zlib.error)


@dataclass
class Part:
    """One input as the user named it (a path, `-`, or gs://bucket/object) and where it is."""

    name: str
    path: str | None  # local path or "-"; None until a Cloud Storage object is downloaded
    size: int | None = None
    updated: datetime | None = None
    gcs: object = None  # pcaptool.storage.fetch.GcsObject for gs:// parts
    listed: bool = False  # found in a directory or under a gs:// prefix, not named


@dataclass
class MergeResult:
    packets: int = 0
    inputs: int = 0
    format: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)


# -- inputs ---------------------------------------------------------------------------------


def expand_local(spec: str, suffixes: tuple[str, ...]) -> list[Part]:
    """A file, `-`, a directory (every part in it, recursively, in name order) or a glob."""
    if spec == "-":
        return [Part("<stdin>", "-")]
    path = Path(spec)
    if path.is_dir():
        found = sorted((p for p in path.rglob("*") if _is_part(p, suffixes)), key=lambda p: str(p))
        if not found:
            raise PcapToolError(f"{spec}: no parts ({', '.join(suffixes)}) in this directory")
        return [_local_part(p, listed=True) for p in found]
    if not path.exists() and GLOB_CHARS & set(spec):
        found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not found:
            raise PcapToolError(f"{spec}: no file matches")
        return [_local_part(Path(p), listed=True) for p in found]
    if not path.exists():
        raise PcapToolError(f"{spec}: no such file or directory")
    return [_local_part(path)]


def resolve_parts(
    specs: list[str],
    fmt: str | None,
    output: str | None,
    list_gcs: Callable[[str, tuple[str, ...]], list[Part]],
) -> tuple[list[Part], bool]:
    """The parts SPECS name, in order, and whether they are NDJSON.

    Directories and gs:// prefixes are listed for both kinds of part; the kind is NDJSON
    when FMT says so or when every part found is NDJSON by name. A folder holding both
    merges its captures. The OUTPUT file is left out of listings (see exclude_output).
    """
    wanted = {
        "ndjson": NDJSON_SUFFIXES,
        "pcap": CAPTURE_SUFFIXES,
        "pcapng": CAPTURE_SUFFIXES,
    }.get(fmt or "", CAPTURE_SUFFIXES + NDJSON_SUFFIXES)
    parts: list[Part] = []
    for spec in specs:
        parts.extend(
            list_gcs(spec, wanted) if spec.startswith("gs://") else expand_local(spec, wanted)
        )
    ndjson = fmt == "ndjson" or (
        fmt is None and all(p.name.endswith(NDJSON_SUFFIXES) for p in parts)
    )
    if fmt is None and not ndjson:
        parts = [p for p in parts if not p.listed or p.name.endswith(CAPTURE_SUFFIXES)]
    return exclude_output(parts, output, set(specs)), ndjson


def _is_part(path: Path, suffixes: tuple[str, ...]) -> bool:
    # Hidden names are temporaries (a part being written or downloaded), never a part.
    name = path.name
    return not name.startswith(".") and name.endswith(suffixes) and path.is_file()


def _local_part(path: Path, listed: bool = False) -> Part:
    st = path.stat()
    mtime = datetime.fromtimestamp(st.st_mtime, UTC)
    return Part(str(path), str(path), st.st_size, mtime, listed=listed)


def exclude_output(parts: list[Part], output: str | None, explicit: set[str]) -> list[Part]:
    """Drop the output file from expanded inputs; refuse it when it was named as an input."""
    if not output or output == "-" or not os.path.exists(output):
        return parts
    kept = []
    for part in parts:
        if part.path not in (None, "-") and os.path.samefile(part.path, output):
            if part.name in explicit:
                raise UsageError(f"{output} is both an input and the output")
            continue
        kept.append(part)
    return kept


# -- probing --------------------------------------------------------------------------------


class _Prefixed:
    """A read-only stream: bytes already read, then the rest of the underlying stream."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream
        self._read = getattr(stream, "read1", stream.read)

    def read1(self, n: int = -1) -> bytes:
        if self._prefix:
            if 0 <= n < len(self._prefix):
                out, self._prefix = self._prefix[:n], self._prefix[n:]
                return out
            out, self._prefix = self._prefix, b""
            return out
        return self._read(n)

    read = read1

    def close(self) -> None:
        self._stream.close()


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
class _Probe:
    part: Part
    format: str  # "pcap" | "pcapng"
    first_ts: int | None  # None: no packet
    interfaces: list[tuple[int, int, str | None]]  # (linktype, snaplen, name) of section 0
    nanosecond: bool
    stdin_prefix: _Prefixed | None = None


def _probe(part: Part) -> _Probe:
    """Open a part, read its header(s) and first packet, and close it again."""
    source = sys.stdin.buffer if part.path == "-" else part.path
    stream = open_input(source)
    recorder = _Recorder(stream) if part.path == "-" else None
    try:
        reader = CaptureReader(recorder or stream, part.name)
        try:
            first = next(iter(reader), None)
        except _decompress_errors() as exc:
            raise CaptureFormatError(f"{part.name}: compressed data is corrupt ({exc})") from None
        interfaces = [(i.linktype, i.snaplen, i.name) for i in reader.interfaces]
        probe = _Probe(
            part,
            reader.format or "pcap",
            first.ts_ns if first else None,
            interfaces,
            reader.nanosecond,
        )
        if recorder is not None:
            probe.stdin_prefix = _Prefixed(b"".join(recorder.seen), stream)
        return probe
    finally:
        if recorder is None:
            stream.close()


def _open_again(probe: _Probe) -> BinaryIO:
    if probe.stdin_prefix is not None:
        return probe.stdin_prefix  # type: ignore[return-value]
    return open_input(probe.part.path)


# -- record sources -------------------------------------------------------------------------


def _pcap_records(
    stream: BinaryIO, name: str, idx: int, n: int, linktype: int, nanosecond: bool, chunk: int
) -> Iterator[list[tuple[int, bytes]]]:
    """Batches of (merge key, raw pcap record) of input IDX of N, for a pcap output.

    A little-endian input of the output's resolution and link type is sliced, not
    decoded; anything else (big-endian, other resolution, pcapng, a second section) goes
    through CaptureReader and is re-encoded. The merge key is explained in `_merge`.
    """
    read = getattr(stream, "read1", stream.read)
    errors = _decompress_errors()
    rank = n - 1 - idx
    try:
        head = b""
        while len(head) < 24:
            more = read(chunk)
            if not more:
                break
            head += more
        fields = PCAP_HEADER["<"].unpack_from(head) if len(head) >= 24 else None
        want = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        if fields is None or fields[0] != want or fields[1] != 2 or fields[6] != linktype:
            rest = _Prefixed(head, stream)
            entries = _pcap_reencode(rest, name, linktype, nanosecond)
            yield from _keyed(entries, n, idx, -1, 1 if nanosecond else 1000)
            return
        # Keys count in the input's own unit (us or ns: the output's too), scaled by n so
        # that adding the rank orders ties; `high * n + rank` -> `high_n + rank`.
        per_sec = (1_000_000_000 if nanosecond else 1_000_000) * n
        limit = max(fields[5], MAX_RECORD)
        unpack = _PCAP_REC.unpack_from
        buf, pos, count, consumed, high = head, 24, 0, 0, -1
        while True:
            size = len(buf)
            batch: list[tuple[int, bytes]] = []
            append = batch.append
            while pos + 16 <= size:
                sec, frac, incl, _orig = unpack(buf, pos)
                end = pos + 16 + incl
                if end > size or incl > limit:
                    break
                key = sec * per_sec + frac * n + rank
                if key > high:
                    high = key
                append((high, buf[pos:end]))
                pos = end
            if batch:
                count += len(batch)
                yield batch
            if pos + 16 <= size:
                sec, _, incl, _ = unpack(buf, pos)
                if sec in _NEW_STREAM_WORDS:
                    # A new capture header on the same input: let the full reader go on.
                    rest = _Prefixed(buf[pos:], stream)
                    entries = _pcap_reencode(rest, name, linktype, nanosecond)
                    yield from _keyed(entries, n, idx, high, 1 if nanosecond else 1000)
                    return
                if incl > limit:
                    raise CaptureFormatError(
                        f"{name}: corrupt packet record {count + 1} at byte {consumed + pos}: "
                        f"captured length {incl} exceeds the limit {limit}"
                    )
            more = _read_more(
                read, max(chunk, 16 + incl if pos + 16 <= size else 16), errors, name, count
            )
            if not more:
                if pos == size:
                    return
                raise CaptureFormatError(
                    f"{name}: file cut short in packet record {count + 1} at byte "
                    f"{consumed + pos} (after packet {count}; {size - pos} bytes left over)"
                )
            consumed += pos
            buf = buf[pos:] + more
            pos = 0
    finally:
        stream.close()


def _read_more(read, size: int, errors: tuple, name: str, count: int) -> bytes:
    """The next chunk of a part; broken compressed data is the part's CaptureFormatError."""
    try:
        return read(size)
    except errors as exc:
        raise CaptureFormatError(
            f"{name}: compressed data is corrupt or cut short ({exc}) after packet {count}"
        ) from None


def _keyed(
    entries: Iterator[tuple[int, bytes]],
    n: int,
    idx: int,
    high: int = -1,
    unit_ns: int = 1,
    size: int = 1024,
) -> Iterator[list[tuple[int, bytes]]]:
    """(ts_ns, record) -> batches of (merge key, record); good entries come before an error.

    The key is `ts * n + rank` in units of UNIT_NS, kept at its running maximum (`_merge`).
    """
    rank = n - 1 - idx
    batch: list[tuple[int, bytes]] = []
    error = None
    try:
        for ts, record in entries:
            key = ts // unit_ns * n + rank
            if key > high:
                high = key
            batch.append((high, record))
            if len(batch) >= size:
                yield batch
                batch = []
    except CaptureFormatError as exc:
        error = exc
    if batch:
        yield batch
    if error is not None:
        raise error


def _pcap_reencode(
    stream, name: str, linktype: int, nanosecond: bool
) -> Iterator[tuple[int, bytes]]:
    reader = CaptureReader(stream, name)
    pack = _PCAP_REC.pack
    try:
        for pkt in reader:
            if pkt.linktype != linktype:
                raise PcapToolError(
                    f"{name}: packet {reader.count} has link type {_linktype_name(pkt.linktype)}, "
                    f"the pcap output has {_linktype_name(linktype)}: use --format pcapng"
                )
            ts = pkt.ts_ns
            sec, frac = divmod(ts, 1_000_000_000)
            if not nanosecond:
                frac //= 1000
            yield (ts, pack(sec, frac, pkt.caplen, pkt.wirelen) + pkt.data)
    except _decompress_errors() as exc:
        raise CaptureFormatError(f"{name}: compressed data is corrupt ({exc})") from None


class _Interfaces:
    """Output pcapng interfaces: one per (link type, interface name) over all inputs."""

    def __init__(self, writer: PcapngWriter) -> None:
        self.writer = writer
        self.index: dict[tuple[int, str | None], int] = {}

    def declare(self, keys: dict[tuple[int, str | None], int]) -> None:
        for (linktype, ifname), snaplen in keys.items():
            self.index[(linktype, ifname)] = self.writer.add_interface(linktype, snaplen, ifname)

    def get(self, linktype: int, ifname: str | None, snaplen: int) -> int:
        key = (linktype, ifname)
        found = self.index.get(key)
        if found is None:
            # A section or interface first seen mid-merge: its IDB goes out before its
            # first packet (pcapng allows an IDB anywhere in a section).
            found = self.index[key] = self.writer.add_interface(
                linktype, snaplen or MAX_RECORD, ifname
            )
        return found


def _pcapng_records(
    stream, name: str, interfaces: _Interfaces, close: bool = True
) -> Iterator[tuple[int, bytes]]:
    """(ts_ns, enhanced packet block) of one input, mapped onto the output interfaces."""
    reader = CaptureReader(stream, name)
    head, body, tail = _EPB_HEAD.pack, _EPB_BODY.pack, _U32.pack
    section = -1
    mapping: dict[int, int] = {}
    try:
        for pkt in reader:
            if reader.section != section:
                section, mapping = reader.section, {}
            out = mapping.get(pkt.iface)
            if out is None:
                iface = reader.interfaces[pkt.iface]
                out = mapping[pkt.iface] = interfaces.get(iface.linktype, iface.name, iface.snaplen)
            ts, n = pkt.ts_ns, pkt.caplen
            pad = -n & 3
            blen = 32 + n + pad
            yield (
                ts,
                head(BLOCK_EPB, blen)
                + body(out, ts >> 32, ts & 0xFFFFFFFF, n, pkt.wirelen)
                + pkt.data
                + b"\0" * pad
                + tail(blen),
            )
    except _decompress_errors() as exc:
        raise CaptureFormatError(f"{name}: compressed data is corrupt ({exc})") from None
    finally:
        stream.close()


_BLOCK_LE = BLOCK_HEADER["<"]
_EPB_FULL = struct.Struct("<IIIIIII")  # type, length, interface, ts high, ts low, incl, orig
_IDB_LE = IDB_BODY["<"]
_OPT_LE = OPTION["<"]
_PB_LE = PB_BODY["<"]
_BOM_LE = b"\x4d\x3c\x2b\x1a"  # 0x1A2B3C4D written little-endian


def _pcapng_fast(
    stream: BinaryIO, name: str, idx: int, n: int, interfaces: _Interfaces, chunk: int
) -> Iterator[list[tuple[int, bytes]]]:
    """Batches of (merge key, enhanced packet block) of a little-endian pcapng input.

    An EPB whose interface has nanosecond time stamps and keeps its index in the output
    is copied as it is (options included); otherwise only its 28-byte head is rewritten.
    A big-endian section (rare) or a pcap stream, and what follows, go to CaptureReader.
    """
    read = getattr(stream, "read1", stream.read)
    errors = _decompress_errors()
    rank = n - 1 - idx
    buf, pos, consumed, count, high = b"", 0, 0, 0, -1
    # per interface of the current section: (output index, ts_mul, ts_div, offset_ns, snaplen)
    section: list[tuple[int, int, int, int, int]] = []
    try:
        while True:
            size = len(buf)
            batch: list[tuple[int, bytes]] = []
            append = batch.append
            handover = False
            while pos + 12 <= size:
                btype, blen = _BLOCK_LE.unpack_from(buf, pos)
                if btype in PCAP_MAGIC or (
                    btype == PCAPNG_SHB and buf[pos + 8 : pos + 12] != _BOM_LE
                ):
                    # a pcap stream or a big-endian (or broken) section: CaptureReader's
                    handover = True
                    break
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    raise CaptureFormatError(
                        f"{name}: corrupt pcapng block at byte {consumed + pos}: "
                        f"type 0x{btype:08x}, length {blen}"
                    )
                end = pos + blen
                if end > size:
                    break  # read more
                if _U32.unpack_from(buf, end - 4)[0] != blen:
                    raise CaptureFormatError(
                        f"{name}: corrupt pcapng block at byte {consumed + pos}: "
                        "trailing length does not match"
                    )
                if btype == BLOCK_EPB:
                    _, _, iface, hi, lo, incl, orig = _EPB_FULL.unpack_from(buf, pos)
                    if 28 + incl > blen - 4 or iface >= len(section):
                        raise _bad_epb(name, consumed + pos, iface, len(section), count)
                    out, mul, div, offset, _ = section[iface]
                    if mul == 1 and div == 1 and not offset:
                        ts = (hi << 32) | lo
                        if out == iface:
                            block = buf[pos:end]
                        else:
                            head = _EPB_FULL.pack(BLOCK_EPB, blen, out, hi, lo, incl, orig)
                            block = head + buf[pos + 28 : end]
                    else:
                        ts = ((hi << 32) | lo) * mul // div + offset
                        head = _EPB_FULL.pack(
                            BLOCK_EPB, blen, out, ts >> 32, ts & 0xFFFFFFFF, incl, orig
                        )
                        block = head + buf[pos + 28 : end]
                    key = ts * n + rank
                    if key > high:
                        high = key
                    append((high, block))
                    count += 1
                elif btype == PCAPNG_SHB:
                    major = struct.unpack_from("<H", buf, pos + 12)[0]
                    if major != 1:
                        raise CaptureFormatError(
                            f"{name}: pcapng section at byte {consumed + pos} has unsupported "
                            f"version {major} (after packet {count})"
                        )
                    section = []
                elif btype == BLOCK_IDB:
                    section.append(_idb(buf, pos, blen, interfaces))
                elif btype in (BLOCK_PB, BLOCK_SPB):
                    if not section:
                        raise _bad_epb(name, consumed + pos, 0, 0, count)
                    ts, record = _old_packet_block(buf, pos, blen, btype, section, name, consumed)
                    key = ts * n + rank
                    if key > high:
                        high = key
                    append((high, record))
                    count += 1
                pos = end
            if batch:
                yield batch
            if handover:
                rest = _Prefixed(buf[pos:], stream)
                entries = _pcapng_records(rest, name, interfaces, close=False)
                yield from _keyed(entries, n, idx, high)
                return
            more = _read_more(read, chunk, errors, name, count)
            if not more:
                if pos == size:
                    return
                raise CaptureFormatError(
                    f"{name}: file cut short in a pcapng block at byte {consumed + pos} "
                    f"(after packet {count}; {size - pos} bytes left over)"
                )
            consumed += pos
            buf = buf[pos:] + more
            pos = 0
    finally:
        stream.close()


def _bad_epb(name: str, at: int, iface: int, declared: int, count: int) -> CaptureFormatError:
    if iface >= declared:
        return CaptureFormatError(
            f"{name}: packet {count + 1} names interface {iface}, "
            f"but the section declares {declared}"
        )
    return CaptureFormatError(f"{name}: corrupt enhanced packet block at byte {at}")


def _idb(
    buf: bytes, pos: int, blen: int, interfaces: _Interfaces
) -> tuple[int, int, int, int, int]:
    """An interface description block -> (output index, ts_mul, ts_div, offset_ns, snaplen)."""
    linktype, _, snaplen = _IDB_LE.unpack_from(buf, pos + 8)
    ifname, mul, div, offset = None, 1000, 1, 0
    at, end = pos + 16, pos + blen - 4
    while at + 4 <= end:
        code, length = _OPT_LE.unpack_from(buf, at)
        if code == 0:
            break
        value = buf[at + 4 : at + 4 + length]
        if code == 2:  # if_name
            ifname = value.rstrip(b"\0").decode("utf-8", "replace")
        elif code == 9 and value:  # if_tsresol
            resol = value[0]
            if resol & 0x80:
                mul, div = 1_000_000_000, 1 << (resol & 0x7F)
            elif resol <= 9:
                mul, div = 10 ** (9 - resol), 1
            else:
                mul, div = 1, 10 ** (resol - 9)
        elif code == 14 and length == 8:  # if_tsoffset, seconds
            offset = struct.unpack("<q", value)[0] * 1_000_000_000
        at += 4 + ((length + 3) & ~3)
    return (interfaces.get(linktype, ifname, snaplen), mul, div, offset, snaplen)


def _old_packet_block(buf, pos, blen, btype, section, name, consumed) -> tuple[int, bytes]:
    """A (deprecated) packet block or a simple packet block, as an EPB of the output."""
    if btype == BLOCK_PB:
        iface, _drops, hi, lo, incl, orig = _PB_LE.unpack_from(buf, pos + 8)
        if 28 + incl > blen - 4 or iface >= len(section):
            raise _bad_epb(name, consumed + pos, iface, len(section), 0)
        out, mul, div, offset, _ = section[iface]
        ts = ((hi << 32) | lo) * mul // div + offset
        data = buf[pos + 28 : pos + 28 + incl]
    else:  # simple packet block: interface 0, no time stamp
        (orig,) = _U32.unpack_from(buf, pos + 8)
        out, _, _, _, snaplen = section[0]
        incl = min(orig, blen - 16, snaplen or orig)
        ts, data = 0, buf[pos + 12 : pos + 12 + incl]
    pad = -incl & 3
    size = 32 + incl + pad
    head = _EPB_FULL.pack(BLOCK_EPB, size, out, ts >> 32, ts & 0xFFFFFFFF, incl, orig)
    return ts, head + data + b"\0" * pad + _U32.pack(size)


# -- the merge ------------------------------------------------------------------------------


def choose_format(probes: list[_Probe], requested: str | None) -> str:
    linktypes = {lt for p in probes for lt, _, _ in p.interfaces}
    if requested == "pcap" and len(linktypes) > 1:
        names = ", ".join(_linktype_name(lt) for lt in sorted(linktypes))
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
) -> list[_Probe]:
    """Probe every part; a bad one is an error, or with `skip_bad` a warning."""
    probes = []
    for part in parts:
        try:
            probes.append(_probe(part))
        except CaptureFormatError as exc:
            if not skip_bad:
                raise
            result.skipped.append((part.name, str(exc)))
            warn(f"{exc}; skipped this part")
    return probes


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
            return _pcap_records(_open_again(p), p.part.name, i, n, linktype, nanosecond, chunk)

    else:
        interfaces = _Interfaces(PcapngWriter(out))
        keys: dict[tuple[int, str | None], int] = {}
        for p in probes:
            for lt, snap, ifname in p.interfaces:
                keys[(lt, ifname)] = max(keys.get((lt, ifname), 0), snap or MAX_RECORD)
        interfaces.declare(keys)

        def source(i: int) -> Iterator[list[tuple[int, bytes]]]:
            p = probes[i]
            if p.format == "pcapng":
                return _pcapng_fast(_open_again(p), p.part.name, i, n, interfaces, chunk)
            return _keyed(_pcapng_records(_open_again(p), p.part.name, interfaces), n, i)

    def bad(i: int, exc: CaptureFormatError) -> None:
        if not skip_bad:
            out.flush()
            raise exc
        result.skipped.append((probes[i].part.name, str(exc)))
        warn(f"{exc}; skipped the rest of this part")

    write = out.write
    if append:
        for i in range(len(probes)):
            if probes[i].first_ts is None:
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


_KEY, _RECORD = itemgetter(0), itemgetter(1)


def _merge(
    probes: list[_Probe],
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
        (p.first_ts // unit_ns * n + n - 1 - i, i)
        for i, p in enumerate(probes)
        if p.first_ts is not None
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
            out = pieces[0]  # parts that do not overlap in time: nothing to sort
        else:
            out = list(chain.from_iterable(pieces))
            out.sort(key=_KEY)  # stable: one input's records keep their order
        write(b"".join(map(_RECORD, out)))
        written += len(out)
        for i in drained:
            del pending[i]
            refill(i)
    return written


# -- NDJSON ---------------------------------------------------------------------------------


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
    except _decompress_errors() as exc:
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


# -- listing --------------------------------------------------------------------------------


@dataclass
class PartSummary:
    name: str
    size: int | None
    updated: datetime | None
    first_ns: int | None = None
    last_ns: int | None = None
    packets: int | None = None
    error: str | None = None


def summarize(part: Part, path: str | None = None) -> PartSummary:
    """Name, size, time range and packet count of one part (reads it through)."""
    summary = PartSummary(part.name, part.size, part.updated)
    path = path or part.path
    if path is None:
        return summary
    if path != "-" and part.name.endswith(NDJSON_SUFFIXES):
        return _summarize_ndjson(summary, path)
    first = last = None
    count = 0
    try:
        stream = open_input(sys.stdin.buffer if path == "-" else path)
        try:
            for pkt in CaptureReader(stream, part.name):
                if first is None:
                    first = pkt.ts_ns
                last = pkt.ts_ns
                count += 1
        finally:
            stream.close()
    except CaptureFormatError as exc:
        summary.error = str(exc)
    except _decompress_errors() as exc:
        summary.error = f"{part.name}: compressed data is corrupt ({exc})"
    summary.first_ns, summary.last_ns, summary.packets = first, last, count
    return summary


def _summarize_ndjson(summary: PartSummary, path: str) -> PartSummary:
    result = MergeResult()
    part = Part(summary.name, path)
    count, first, last = 0, None, None
    try:
        for (ts, *_rest), _i, _line in _ndjson_records(part, 0, False, lambda m: None, result):
            first = ts if first is None else min(first, ts)
            last = ts if last is None else max(last, ts)
            count += 1
    except CaptureFormatError as exc:
        summary.error = str(exc)
    summary.first_ns, summary.last_ns, summary.packets = first, last, count
    return summary


def format_ns(ts_ns: int | None) -> str:
    """Integer ns -> RFC 3339 UTC with nanoseconds (`-` for none)."""
    if ts_ns is None:
        return "-"
    sec, frac = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _linktype_name(linktype: int) -> str:
    name = LINKTYPE_NAMES.get(linktype)
    return f"{linktype} ({name})" if name else str(linktype)
