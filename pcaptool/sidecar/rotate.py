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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pcaptool import fsmode
from pcaptool.capfile.framing import HEADER, INTERFACE, NONE, OTHER, PACKET, Framer  # noqa: F401 - OTHER is a framer event kind rotate hands on
from pcaptool.errors import CaptureFormatError, PcapToolError, UsageError
from pcaptool.log import log
from pcaptool.sidecar.partfix import NO_SPACE, PartsFull, close_quietly, hold, repair
from pcaptool.signals import StopSignals

# Framer events (pcaptool.capfile.framing): a file header (pcap) or SHB (pcapng); a pcapng
# IDB, repeated at the start of every later part of the section; a packet record/block, or
# one NDJSON line (newline included); any other pcapng block, copied where it falls.
NEW_STREAM, RECORD = HEADER, PACKET

READ_SIZE = 1 << 20
MAX_LINE = 64 * 1024 * 1024  # an NDJSON line longer than this is not a log record
MAX_PENDING = 4 * 1024 * 1024  # non-packet blocks held while no part is open

PART_RE = re.compile(r"^part__(?P<iface>.+?)__(?P<stamp>\d{8}T\d{6})(?:_(?P<seq>\d{4,}))?\.\w+$")


class CaptureFramer(Framer):
    """The capture framer as rotate uses it: units as (kind, memoryview), nothing decoded.

    Push-style (`feed()` bytes as they arrive, get whole units back) so a caller can wait on
    the input with a timeout. Concatenated streams are followed: each new pcap header or
    pcapng SHB is a NEW_STREAM event. Lengths are checked by `Framer`; a corrupt one raises
    CaptureFormatError after every unit before it was returned.
    """

    events = Framer.feed  # the framer's own (kind, start, end, info) events, as rotate uses

    def __init__(self, name: str = "-") -> None:
        super().__init__(name, decode=NONE)

    @property
    def iface_names(self) -> list[str]:
        return [iface.name or "" for iface in self.interfaces]

    def feed(self, data: bytes) -> Iterator[tuple[str, memoryview]]:  # type: ignore[override]
        view = None
        try:
            for kind, start, end, _ in super().feed(data):
                if view is None:
                    view = memoryview(self.buf)
                yield kind, view[start:end]
        finally:
            if view is not None:
                view.release()


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
            fsmode.make_dirs(self.directory)
            self._dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError as exc:
            raise PcapToolError(f"cannot use directory {self.directory}: {exc.strerror}") from None
        if not os.access(self.directory, os.W_OK):
            raise PcapToolError(f"cannot write to directory {self.directory}")

    # -- events ---------------------------------------------------------------------------

    def new_stream(self, header: bytes, fmt: str) -> None:
        self.close_part()
        self._header, self._format = bytes(header), fmt
        self._interfaces, self._names = [], []
        self._pending, self._pending_size = [], 0

    def interface(self, block: bytes, name: str | None = None) -> None:
        self._interfaces.append(bytes(block))
        self._names.append(name or "")
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
            f = fsmode.create(tmp, buffering=READ_SIZE)  # private; closed in close_part
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
        rotator.new_stream(b"", "ndjson")
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
            if fmt == "ndjson":
                _dispatch(framer, framer.feed(chunk), rotator)
            else:
                _dispatch_capture(framer, chunk, rotator)
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
            rotator.new_stream(data, framer.format)
        elif kind is INTERFACE:
            rotator.interface(data, framer.interfaces[-1].name)
        else:
            rotator.other(data)


def _dispatch_capture(framer: CaptureFramer, chunk: bytes, rotator: Rotator) -> None:
    events = framer.events(chunk)
    view = memoryview(framer.buf)
    record = rotator.record
    try:
        for kind, start, end, info in events:
            if kind is RECORD:
                record(view[start:end])
            elif kind is NEW_STREAM:
                rotator.new_stream(view[start:end], framer.format)
            elif kind is INTERFACE:
                rotator.interface(view[start:end], info.name)
            else:
                rotator.other(view[start:end])
    finally:
        view.release()
