"""Cut a live capture stream (pcap, pcapng or NDJSON) into finished parts on disk.

Records are copied byte for byte: `CaptureFramer` finds record and block boundaries
without decoding packets, so a part keeps the input's format, byte order, timestamp
resolution and interface options. A pcap part starts with the input's 24-byte file
header, a pcapng part with the section's SHB and every IDB seen so far in that section.

Parts close on a wall-clock timer even while no packet arrives: the input is read with
`select()` and a timeout instead of a blocking read. See docs/rotate.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pcaptool.capfile.reader import (
    BLOCK_HEADER,
    BLOCK_IDB,
    IDB_BODY,
    MAX_BLOCK,
    MAX_RECORD,
    OPT_ENDOFOPT,
    OPT_IF_NAME,
    OPTION,
    PCAP_HEADER,
    PCAP_MAGIC,
    PCAP_RECORD,
    PCAPNG_BOM,
    PCAPNG_SHB,
    stream_header_at,
)
from pcaptool.errors import CaptureFormatError, PcapToolError, UsageError
from pcaptool.record.ndjson import log
from pcaptool.sidecar.partfix import NO_SPACE, PartsFull, close_quietly, hold, repair
from pcaptool.signals import StopSignals

SHB_VERSION = {bo: struct.Struct(bo + "HH") for bo in "<>"}

# Framer events
NEW_STREAM = "stream"  # a file header (pcap) or SHB (pcapng): data is that header
INTERFACE = "iface"  # a pcapng IDB: repeated at the start of every later part of the section
RECORD = "record"  # a packet record/block, or one NDJSON line (newline included)
OTHER = "other"  # any other pcapng block (NRB, ISB, DSB, custom): copied where it falls

READ_SIZE = 1 << 20
MAX_LINE = 64 * 1024 * 1024  # an NDJSON line longer than this is not a log record
MAX_PENDING = 4 * 1024 * 1024  # non-packet blocks held while no part is open

PART_RE = re.compile(r"^part__(?P<iface>.+?)__(?P<stamp>\d{8}T\d{6})(?:_(?P<seq>\d{4,}))?\.\w+$")


class CaptureFramer:
    """Split pcap/pcapng bytes into header, interface, record and other blocks.

    Push-style (`feed()` bytes as they arrive, get whole units back) so a caller can wait on
    the input with a timeout. Concatenated streams are followed: each new pcap header or
    pcapng SHB is a NEW_STREAM event. Lengths are checked; a corrupt one raises
    CaptureFormatError after every unit before it was returned.
    """

    def __init__(self, name: str = "-") -> None:
        self.name = name
        self.format: str | None = None
        self.section = -1
        self.offset = 0  # input offset of the first byte not yet returned
        self.iface_names: list[str] = []
        self._rest = b""
        self._bo = "<"
        self._limit = MAX_RECORD

    def feed(self, data: bytes) -> Iterator[tuple[str, memoryview]]:
        buf = self._rest + data if self._rest else data
        view = memoryview(buf)
        pos, end = 0, len(buf)
        try:
            while pos < end:
                if self.format is None or (
                    self.format == "pcap"
                    and end - pos >= 4
                    and buf[pos] in (0xA1, 0xD4, 0x4D, 0x0A)
                    and stream_header_at(buf, pos)
                ):
                    n = self._header(buf, pos)
                    if n == 0:
                        break
                    yield NEW_STREAM, view[pos : pos + n]
                elif self.format == "pcap":
                    if end - pos < 16:
                        break
                    incl = PCAP_RECORD[self._bo].unpack_from(buf, pos)[2]
                    if incl > self._limit:
                        raise self._corrupt(pos, f"captured length {incl} exceeds {self._limit}")
                    n = 16 + incl
                    if end - pos < n:
                        break
                    yield RECORD, view[pos : pos + n]
                else:
                    if end - pos < 12:
                        break
                    btype, blen = BLOCK_HEADER[self._bo].unpack_from(buf, pos)
                    if btype == PCAPNG_SHB or (
                        btype in PCAP_MAGIC and stream_header_at(buf, pos) == "pcap"
                    ):
                        n = self._header(buf, pos)
                        if n == 0:
                            break
                        yield NEW_STREAM, view[pos : pos + n]
                        pos += n
                        self.offset += n
                        continue
                    if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                        raise self._corrupt(pos, f"block type 0x{btype:08x} length {blen}")
                    n = blen
                    if end - pos < n:
                        break
                    if btype in (2, 3, 6):  # PB, SPB, EPB
                        yield RECORD, view[pos : pos + n]
                    elif btype == BLOCK_IDB:
                        self.iface_names.append(self._if_name(buf, pos, blen))
                        yield INTERFACE, view[pos : pos + n]
                    else:
                        yield OTHER, view[pos : pos + n]
                pos += n
                self.offset += n
        finally:
            view.release()
            self._rest = buf[pos:]

    def _header(self, buf: bytes, pos: int) -> int:
        """Length of the file header at pos (0 = need more bytes); sets format/byte order."""
        if len(buf) - pos < 12:
            return 0
        kind = stream_header_at(buf, pos)
        if kind == "pcap":
            if len(buf) - pos < 24:
                return 0
            self._bo = PCAP_MAGIC[int.from_bytes(buf[pos : pos + 4], "little")][0]
            snaplen = PCAP_HEADER[self._bo].unpack_from(buf, pos)[5]
            self._limit = max(snaplen, MAX_RECORD)
            n = 24
        elif kind == "pcapng":
            bom = int.from_bytes(buf[pos + 8 : pos + 12], "little")
            self._bo = "<" if bom == PCAPNG_BOM else ">"
            n = BLOCK_HEADER[self._bo].unpack_from(buf, pos)[1]
            if n < 28 or n % 4 or n > MAX_BLOCK:
                raise self._corrupt(pos, f"section header length {n}")
            if len(buf) - pos < 16:
                return 0
            major, minor = SHB_VERSION[self._bo].unpack_from(buf, pos + 12)
            if major != 1:  # as CaptureReader: a reader of 1.x cannot know the layout
                raise CaptureFormatError(
                    f"{self.name}: pcapng section at byte {self.offset} has unsupported "
                    f"version {major}.{minor}"
                )
            if len(buf) - pos < n:
                return 0
        else:
            raise CaptureFormatError(
                f"{self.name}: not a pcap or pcapng capture "
                f"(magic 0x{bytes(buf[pos : pos + 4]).hex()} at byte {self.offset})"
            )
        self.format = kind
        self.section += 1
        self.iface_names = []
        return n

    def _if_name(self, buf: bytes, pos: int, blen: int) -> str:
        opt = OPTION[self._bo].unpack_from
        p, end = pos + 8 + IDB_BODY[self._bo].size, pos + blen - 4
        while p + 4 <= end:
            code, length = opt(buf, p)
            if code == OPT_ENDOFOPT:
                break
            if code == OPT_IF_NAME:
                return bytes(buf[p + 4 : p + 4 + length]).rstrip(b"\0").decode("utf-8", "replace")
            p += 4 + ((length + 3) & ~3)
        return ""

    def _corrupt(self, pos: int, what: str) -> CaptureFormatError:
        return CaptureFormatError(f"{self.name}: corrupt capture at byte {self.offset}: {what}")

    def close(self) -> None:
        """End of input: bytes left over mean the stream was cut inside a record."""
        if self._rest:
            raise CaptureFormatError(
                f"{self.name}: input cut short at byte {self.offset} "
                f"({len(self._rest)} bytes of an incomplete record dropped)"
            )


class NdjsonFramer:
    """Split NDJSON into lines (each a RECORD); a last line without newline gets one."""

    format = "ndjson"
    section = 0
    iface_names: list[str] = []

    def __init__(self, name: str = "-") -> None:
        self.name = name
        self._rest = b""

    def feed(self, data: bytes) -> Iterator[tuple[str, memoryview]]:
        buf = self._rest + data if self._rest else data
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            if nl > pos:
                yield RECORD, memoryview(buf)[pos : nl + 1]
            pos = nl + 1
        self._rest = buf[pos:]
        if len(self._rest) > MAX_LINE:
            raise CaptureFormatError(f"{self.name}: NDJSON line longer than {MAX_LINE} bytes")

    def close(self) -> Iterator[tuple[str, memoryview]]:
        if self._rest.strip():
            yield RECORD, memoryview(self._rest + b"\n")
        self._rest = b""


def safe_iface(name: str) -> str:
    """An interface name fit for a file/object name: no `/`, no `__` (the field separator)."""
    name = re.sub(r"[^A-Za-z0-9.+_-]", "-", name.strip())
    name = re.sub(r"_{2,}", "_", name).strip("_")
    return name[:64] or "any"


def part_extension(fmt: str, configured: str | None) -> str:
    """`json` for NDJSON; else the configured extension, else the format's name.

    PCAP_FILE_EXT may be a comma-separated list, as the reference sidecar's watcher reads
    it (`pcap,json`): a capture part takes the first entry that is not `json`.
    """
    if fmt == "ndjson":
        return "json"
    for entry in (configured or "").split(","):
        entry = entry.strip().lstrip(".")
        if entry and entry != "json" and re.fullmatch(r"\w+", entry):
            return entry
    return fmt


def utc_stamp(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y%m%dT%H%M%S")


@dataclass
class _Part:
    path: Path
    tmp: Path
    file: BinaryIO
    deadline: float  # time.monotonic() at which it closes
    size: int = 0
    records: int = 0


@dataclass
class Rotator:
    """Owns the parts: opens one at the first record, closes on time, size or new stream.

    `on_part(path)` is called once per finished part, after its rename.
    """

    directory: Path
    every: float  # seconds; 0 = no time limit
    on_part: Callable[[Path], None]
    max_bytes: int = 0  # 0 = no size limit
    keep: int = 0  # 0 = keep every part
    iface: str | None = None  # overrides the capture's interface names
    ext: str | None = None  # overrides the format's extension
    clock: Callable[[], float] = time.monotonic
    wall_ns: Callable[[], int] = time.time_ns
    parts: int = 0
    _part: _Part | None = None
    _header: bytes = b""
    _interfaces: list[bytes] = field(default_factory=list)
    _pending: list[bytes] = field(default_factory=list)
    _pending_size: int = 0
    _format: str = "pcap"
    _names: list[str] = field(default_factory=list)
    _last_stamp: str = ""
    _seq: int = 0
    _given: set[str] = field(default_factory=set)  # every part name of this run
    _full_until: float = 0.0  # no space: no new part before this clock() time
    unwritten: int = 0  # records dropped because the directory was full
    _dir_fd: int | None = None

    def __post_init__(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError as exc:
            raise PcapToolError(f"cannot use directory {self.directory}: {exc.strerror}") from None
        if not os.access(self.directory, os.W_OK):
            raise PcapToolError(f"cannot write to directory {self.directory}")

    # -- events ---------------------------------------------------------------------------

    def new_stream(self, header: bytes, fmt: str, iface_names: list[str]) -> None:
        self.close_part()
        self._header, self._format = bytes(header), fmt
        self._interfaces, self._names = [], iface_names
        self._pending, self._pending_size = [], 0

    def interface(self, block: bytes) -> None:
        self._interfaces.append(bytes(block))
        if self._part:
            self._write(block)

    def other(self, block: bytes) -> None:
        if self._part:
            self._write(block)
        elif self._pending_size + len(block) <= MAX_PENDING:
            self._pending.append(bytes(block))
            self._pending_size += len(block)

    def record(self, rec: memoryview) -> None:
        part = self._part
        if part and self.max_bytes and part.records and part.size + len(rec) > self.max_bytes:
            self.close_part()
            part = None
        if part is None and self._full_until > self.clock():
            self.unwritten += 1  # the directory was full a moment ago: retried soon
            return
        try:
            if part is None:
                part = self._open()
            self._write(rec)
        except PartsFull:
            self.unwritten += 1
            self._salvage()
            return
        part.records += 1

    def tick(self) -> None:
        """Close the open part if its time is up."""
        if self._part and self.every and self.clock() >= self._part.deadline:
            self.close_part()

    def timeout(self) -> float | None:
        """Seconds until the open part is due, or None when nothing is waiting on time."""
        if self._part is None or not self.every:
            return None
        return max(0.0, self._part.deadline - self.clock())

    # -- parts ----------------------------------------------------------------------------

    def _write(self, data) -> None:
        part = self._part
        try:
            part.file.write(data)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise PartsFull(f"no space left for {part.tmp}") from None
            raise PcapToolError(f"cannot write {part.tmp}: {exc.strerror}") from None
        part.size += len(data)

    def _name(self) -> str:
        ext = part_extension(self._format, self.ext)
        names = [n for n in dict.fromkeys(self._names) if n]
        iface = safe_iface(self.iface or "+".join(names) or "any")
        stamp = utc_stamp(self.wall_ns())
        if stamp != self._last_stamp:
            self._last_stamp, self._seq = stamp, 0
        while True:
            suffix = f"_{self._seq:04d}" if self._seq else ""
            name = f"part__{iface}__{stamp}{suffix}.{ext}"
            self._seq += 1
            path = self.directory / name
            # A name this run gave already (the wall clock stepped back: its part may be
            # uploaded and gone from here), or an earlier run's part or its compressed
            # form in the same second: the next sequence number.
            if name in self._given or path.exists() or path.with_name(name + ".gz").exists():
                continue
            self._given.add(name)
            return name

    def _open(self) -> _Part:
        name = self._name()
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        try:
            f = open(tmp, "xb", buffering=READ_SIZE)  # noqa: SIM115 - closed in close_part
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise PartsFull(f"no space left for {tmp}") from None
            raise PcapToolError(f"cannot create {tmp}: {exc.strerror}") from None
        hold(f)  # while this lock is held, `upload --sweep` leaves the part alone
        self._part = _Part(path, tmp, f, self.clock() + self.every)
        if self.unwritten:
            log("WARNING", f"writing parts again; {self.unwritten} record(s) were lost while "
                f"{self.directory} was full", directory=str(self.directory), lost=self.unwritten)  # fmt: skip
            self.unwritten = 0
        if self._header:
            self._write(self._header)
        for block in self._interfaces:
            self._write(block)
        for block in self._pending:
            self._write(block)
        self._pending, self._pending_size = [], 0
        return self._part

    def close_part(self) -> Path | None:
        """Finish the open part: flush, fsync, rename into place, report it."""
        part, self._part = self._part, None
        if part is None:
            return None
        try:
            part.file.flush()
            os.fsync(part.file.fileno())
            part.file.close()
            os.rename(part.tmp, part.path)
            os.fsync(self._dir_fd)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                self._part = part
                return self._salvage()
            with contextlib.suppress(OSError):
                part.file.close()
            # the bytes written so far stay in the temporary file, for a human to rescue
            raise PcapToolError(
                f"cannot finish {part.path}: {exc.strerror} (what was written is in {part.tmp})"
            ) from None
        self.parts += 1
        if self.keep:
            self._enforce_keep()
        self.on_part(part.path)
        return part.path

    def _salvage(self) -> Path | None:
        """No space: finish the open part with its whole records (so it is uploaded and
        its space freed), say so loudly, and drop records for a second before retrying."""
        part, self._part = self._part, None
        self._full_until = self.clock() + 1.0
        if part is None:
            log("ERROR", f"{self.directory} is full: records dropped until there is space",
                directory=str(self.directory))  # fmt: skip
            return None
        close_quietly(part.file)
        kept = 0
        with contextlib.suppress(OSError):
            kept = repair(part.tmp)
            if kept:
                os.rename(part.tmp, part.path)
        self.unwritten += max(0, part.records - kept)  # the buffer that did not fit
        if not part.path.exists():
            with contextlib.suppress(OSError):
                os.unlink(part.tmp)
            log("ERROR", f"{self.directory} is full: part {part.path.name} could not be "
                "written; records dropped until there is space", directory=str(self.directory))  # fmt: skip
            return None
        log("ERROR", f"{self.directory} is full: part {part.path.name} closed early with the "
            "records that fit; records dropped until there is space",
            directory=str(self.directory), part=str(part.path))  # fmt: skip
        self.parts += 1
        self.on_part(part.path)
        return part.path

    def _enforce_keep(self) -> None:
        """Ring buffer: only the newest `keep` finished parts in the directory stay."""
        finished = []
        for entry in os.scandir(self.directory):
            m = PART_RE.match(entry.name)
            if m and entry.is_file():
                finished.append((m["stamp"], int(m["seq"] or 0), entry.name))
        finished.sort()
        for _, _, name in finished[: max(0, len(finished) - self.keep)]:
            # FileNotFoundError: a downstream stage (compress) took it already
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)

    def close(self) -> None:
        try:
            self.close_part()
            if self.unwritten:
                log("ERROR", f"{self.unwritten} record(s) were lost while {self.directory} "
                    "was full", directory=str(self.directory), lost=self.unwritten)  # fmt: skip
        finally:
            if self._dir_fd is not None:
                os.close(self._dir_fd)
                self._dir_fd = None


def rotate_stream(
    source: BinaryIO,
    rotator: Rotator,
    fmt: str = "capture",
    *,
    stop: StopSignals | None = None,
    drain_timeout: float = 2.0,
    name: str = "<stdin>",
) -> int:
    """Feed `source` through a framer into `rotator` until end of input (or a stop signal
    plus `drain_timeout` seconds of draining). Returns the number of parts written.

    The last part is closed in every case, also when the input turns out corrupt (the
    error is raised after it is finished).
    """
    if fmt not in ("capture", "ndjson"):
        raise UsageError(f"unknown input format {fmt!r} (use capture or ndjson)")
    framer = NdjsonFramer(name) if fmt == "ndjson" else CaptureFramer(name)
    if fmt == "ndjson":
        rotator.new_stream(b"", "ndjson", [])
    try:
        fd = source.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    read = (lambda: os.read(fd, READ_SIZE)) if fd is not None else (lambda: source.read(READ_SIZE))
    watch = [fd] if fd is not None else []
    if stop and stop.fd is not None:
        watch.append(stop.fd)
    stop_by: float | None = None
    drained = False  # stopped by the drain deadline, not by end of input
    try:
        while True:
            if stop and stop.stopping and stop_by is None:
                stop_by = time.monotonic() + drain_timeout
                stop.drain()
            if stop_by is not None and time.monotonic() >= stop_by:
                drained = True  # long enough: the input may never end (a capture ignoring us)
                break
            if watch and fd is not None:
                timeout = rotator.timeout()
                if stop_by is not None:
                    left = max(0.0, stop_by - time.monotonic())
                    timeout = left if timeout is None else min(timeout, left)
                ready, _, _ = select.select(watch, [], [], timeout)
                if stop and stop.fd in ready:
                    stop.drain()
                    continue
                if fd not in ready:
                    rotator.tick()
                    continue
            chunk = read()
            if not chunk:
                break
            _dispatch(framer, framer.feed(chunk), rotator)
            rotator.tick()
        if drained:
            pass  # a record or line cut by our own stop is no input error: dropped
        elif fmt == "ndjson":
            _dispatch(framer, framer.close(), rotator)
        else:
            framer.close()
    finally:
        rotator.close()
    return rotator.parts


def _dispatch(framer, events, rotator: Rotator) -> None:
    record = rotator.record
    for kind, data in events:
        if kind is RECORD:
            record(data)
        elif kind is NEW_STREAM:
            rotator.new_stream(data, framer.format, framer.iface_names)
        elif kind is INTERFACE:
            rotator.interface(data)
        else:
            rotator.other(data)
