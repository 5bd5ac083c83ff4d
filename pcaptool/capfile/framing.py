"""The one pcap/pcapng framer: bytes in, header / interface / packet / other events out.

Push-style: `Framer.feed(chunk)` takes whatever bytes arrived (one byte, a megabyte) and
yields every unit they complete; nothing seeks, so pipes work, and `capture | rotate`
can wait on its input with a timeout. Reading (`CaptureReader`), rotating
(`sidecar.rotate`) and merging (`merge.sources`) all frame through this class, so a
length is checked, an `if_tsresol` decoded and a new concatenated stream noticed in one
place only.

An event is `(kind, start, end, info)`: the unit is `framer.buf[start:end]` (valid until
the next `feed()`), and `info` is, per kind:
- HEADER: "pcap" or "pcapng" (a pcap file header or a pcapng SHB; a new section starts)
- INTERFACE: the `Interface` of a pcapng IDB (options parsed once, here)
- PACKET: a `Packet` (decode=PACKETS), its time stamp in ns (TIMES) or in the stream's
  own units (UNITS, RUNS), or None (NONE)
- RUN (decode=RUNS, pcap streams only): a list of (sort key, record bytes) for every
  record in the chunk, framed without a Python event per record: the key is the time
  stamp in the stream's units times `run_key[0]` plus `run_key[1]`, kept at its running
  maximum over the stream (`run_high`), so sorting by it keeps the stream's own order
  (what a k-way merge needs, see pcaptool.merge.captures)
- OTHER: the block type of any other pcapng block (NRB, ISB, DSB, custom)

Limits (as libpcap and Wireshark): a packet record or block claiming more than MAX_RECORD
captured bytes, a block longer than MAX_BLOCK or shorter than its fixed fields is a
`CaptureFormatError`; so the bytes held while a unit is incomplete stay bounded, and they
are joined once, when the unit is complete (linear in the input however it arrives).
"""

from __future__ import annotations

from collections.abc import Iterator

from pcaptool.capfile.format import (
    BLOCK_CB_COPY,
    BLOCK_EPB,
    BLOCK_HEADER,
    BLOCK_IDB,
    BLOCK_PB,
    BLOCK_SPB,
    EPB_BODY,
    MAX_BLOCK,
    MAX_RECORD,
    MIN_BLOCK,
    NEW_STREAM_WORDS,
    PB_BODY,
    PCAP_HEADER,
    PCAP_MAGIC,
    PCAP_RECORD,
    PCAPNG_BOM,
    PCAPNG_BOM_SWAPPED,
    PCAPNG_SHB,
    SHB_BODY,
    U32,
    Interface,
    Packet,
    parse_idb,
    stream_header_at,
)
from pcaptool.errors import CaptureFormatError

HEADER = "stream"
INTERFACE = "iface"
PACKET = "record"
OTHER = "other"

RUN = "records"  # decode=RUNS: a run of pcap records in one event (see Framer._pcap_runs)

# What a PACKET event's info holds: nothing, the time stamp in ns, a Packet, or the time
# stamp in the stream's own units (pcap: us or ns; pcapng: the interface's, unscaled).
# RUNS is UNITS, but a pcap stream's records come as RUN events (merge's fast path).
NONE, TIMES, PACKETS, UNITS, RUNS = 0, 1, 2, 3, 4

_START, _PCAP, _PCAPNG = 0, 1, 2  # what the next bytes are: a file header, pcap, pcapng


class Framer:
    """Frame a pcap/pcapng byte stream pushed in pieces (see the module docstring)."""

    def __init__(self, name: str = "-", decode: int = PACKETS) -> None:
        self.name = name
        self.decode = decode
        self.format: str | None = None
        self.section = -1  # file headers seen so far, minus one
        self.byte_order = "<"
        self.nanosecond = False
        self.snaplen = 0
        self.interfaces: list[Interface] = []
        # packets framed so far: exact at every event when decoding PACKETS, else once a
        # feed()'s events are all taken
        self.count = 0
        self.buf = b""
        self._state = _START
        self._parts: list[bytes] = []
        self._have = 0  # bytes in _parts
        self._need = 4  # bytes wanted at the head before the next unit can be framed
        self._base = 0  # input offset of buf[0] (while feeding) / of _parts[0]
        self._pos = 0
        self._native: list[bool] = []  # per interface: time stamps are ns already
        self.run_key = (1, 0)  # decode=RUNS: key = units * run_key[0] + run_key[1]
        self.run_high = -1  # decode=RUNS: the largest key so far
        self.copiable = 0  # copiable custom blocks framed so far

    @property
    def offset(self) -> int:
        """Input offset of the first byte not yet framed."""
        return self._base

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole unit yet."""
        return self._have

    def feed(self, data: bytes) -> Iterator[tuple[str, int, int, object]]:
        """Take DATA; the events of every unit now complete (iterate them before feeding on)."""
        buf = self._take(data)
        return iter(()) if buf is None else self._frame(buf)

    def packets(self, data: bytes) -> Iterator[Packet]:
        """`feed(data)` for a reader of packets only (decode=PACKETS): the `Packet` of each
        PACKET event, no other events; plain pcap records take a loop of their own
        (`_pcap_packets`), which builds no event."""
        buf = self._take(data)
        return iter(()) if buf is None else self._frame(buf, True)

    def _take(self, data: bytes) -> bytes | None:
        """Add DATA to what is held: all of it as one piece once the next unit can be
        complete, else None (more is needed)."""
        if data:
            self._parts.append(data)
            self._have += len(data)
        if self._have < self._need:
            return None
        parts = self._parts
        self.buf = buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = [buf]  # held as one piece until framed
        return buf

    def _frame(self, buf: bytes, packets: bool = False) -> Iterator:
        self._pos, self._need = 0, 0
        try:
            while self._need == 0:
                state = self._state
                if state == _PCAP:
                    if packets:
                        yield from self._pcap_packets(buf)
                    else:
                        yield from (self._pcap_runs if self.decode == RUNS else self._pcap)(buf)
                elif state == _PCAPNG:
                    if packets:
                        for kind, _start, _end, info in self._pcapng(buf):
                            if kind is PACKET:
                                yield info
                    else:
                        yield from self._pcapng(buf)
                else:
                    event = self._header(buf, self._pos)
                    if event is not None and not packets:
                        yield event
        finally:
            pos = self._pos
            rest = buf[pos:] if pos else buf
            self._base += pos
            self._parts = [rest] if rest else []
            self._have = len(rest)
            self._need = max(self._need, 1)

    def close(self) -> None:
        """End of input: bytes left over mean it was cut inside a unit."""
        if self._have:
            raise self.cut_short()

    def cut_short(self) -> CaptureFormatError:
        have, n = self._have, self.count + 1
        if self._state == _START:
            what = "the file header" if self.section < 0 else "a file header"
        elif self._state == _PCAP:
            what = f"the header of packet record {n}" if have < 16 else f"packet record {n}"
        elif have < 8:
            what = "a pcapng block header"
        else:
            head = self._parts[0] if len(self._parts[0]) >= 8 else b"".join(self._parts)
            btype = BLOCK_HEADER[self.byte_order].unpack_from(head)[0]
            what = f"a pcapng block of type 0x{btype:08x}"
        return CaptureFormatError(
            f"{self.name}: file cut short in {what} at byte {self._base} "
            f"(after packet {self.count}; {have} bytes left over)"
        )

    def _error(self, pos: int, what: str) -> CaptureFormatError:
        return CaptureFormatError(f"{self.name}: {what} at byte {self._base + pos}")

    # -- file headers ---------------------------------------------------------------------

    def _header(self, buf: bytes, pos: int) -> tuple[str, int, int, str] | None:
        """The file header at pos as an event, or None with `_need` set."""
        left = len(buf) - pos
        if left < 4:
            self._need = 4
            return None
        word = U32["<"].unpack_from(buf, pos)[0]
        if word in PCAP_MAGIC:
            if left < 24:
                self._need = 24
                return None
            n = self._pcap_header(buf, pos, word)
            kind = "pcap"
        elif word == PCAPNG_SHB:
            if left < MIN_BLOCK[PCAPNG_SHB]:
                self._need = MIN_BLOCK[PCAPNG_SHB]
                return None
            n = self._shb_length(buf, pos)
            if left < n:
                self._need = n
                return None
            self.interfaces, self._native = [], []
            self.nanosecond = False
            self._state, kind = _PCAPNG, "pcapng"
        else:
            raise CaptureFormatError(
                f"{self.name}: not a pcap or pcapng capture "
                f"(magic 0x{bytes(buf[pos : pos + 4]).hex()} at byte {self._base + pos})"
            )
        self.format = kind
        self.section += 1
        self._pos = pos + n
        return HEADER, pos, pos + n, kind

    def _pcap_header(self, buf: bytes, pos: int, word: int) -> int:
        bo, nano = PCAP_MAGIC[word]
        _, major, _minor, _zone, _sigfigs, snaplen, network = PCAP_HEADER[bo].unpack_from(buf, pos)
        if major != 2:
            raise CaptureFormatError(f"{self.name}: unsupported pcap version {major}")
        self.byte_order, self.nanosecond, self.snaplen = bo, nano, snaplen
        mul = 1 if nano else 1000
        self.interfaces = [Interface(0, network & 0x0FFFFFFF, snaplen, None, mul)]
        self._native = [nano]
        self._state = _PCAP
        return 24

    def _shb_length(self, buf: bytes, pos: int) -> int:
        bom = U32["<"].unpack_from(buf, pos + 8)[0]
        if bom not in (PCAPNG_BOM, PCAPNG_BOM_SWAPPED):
            raise CaptureFormatError(
                f"{self.name}: corrupt pcapng section header (byte-order magic)"
            )
        bo = self.byte_order = "<" if bom == PCAPNG_BOM else ">"
        blen = BLOCK_HEADER[bo].unpack_from(buf, pos)[1]
        _, major, minor, _ = SHB_BODY[bo].unpack_from(buf, pos + 8)
        if blen < MIN_BLOCK[PCAPNG_SHB] or blen % 4 or blen > MAX_BLOCK:
            raise CaptureFormatError(f"{self.name}: corrupt pcapng section header (length {blen})")
        if major != 1:  # a reader of 1.x cannot know the layout of another major version
            raise CaptureFormatError(
                f"{self.name}: pcapng section at byte {self._base + pos} has unsupported "
                f"version {major}.{minor} (after packet {self.count})"
            )
        return blen

    # -- pcap records ---------------------------------------------------------------------

    def _pcap(self, buf: bytes) -> Iterator[tuple[str, int, int, object]]:
        pos, end, count = self._pos, len(buf), self.count
        unpack = PCAP_RECORD[self.byte_order].unpack_from
        linktype, mul, decode = self.interfaces[0].linktype, self.interfaces[0].ts_mul, self.decode
        per_sec = 1_000_000_000 if self.nanosecond else 1_000_000
        try:
            while True:
                if end - pos < 16:
                    self._need = 16
                    return
                sec, frac, incl, orig = unpack(buf, pos)
                if sec in NEW_STREAM_WORDS and stream_header_at(buf, pos):
                    self._state = _START  # a new capture stream follows on the same input
                    return
                if incl > MAX_RECORD:
                    raise self._error(
                        pos,
                        f"corrupt packet record {count + 1}: captured length {incl} "
                        f"exceeds the limit {MAX_RECORD}",
                    )
                nxt = pos + 16 + incl
                if nxt > end:
                    self._need = 16 + incl
                    return
                start, pos = pos, nxt
                count += 1
                if decode == UNITS:
                    yield PACKET, start, nxt, sec * per_sec + frac
                elif decode == PACKETS:
                    self.count = count
                    ts = sec * 1_000_000_000 + frac * mul
                    yield (
                        PACKET,
                        start,
                        nxt,
                        Packet(ts, incl, orig, buf[start + 16 : nxt], 0, linktype),
                    )
                elif decode:
                    yield PACKET, start, nxt, sec * 1_000_000_000 + frac * mul
                else:
                    yield PACKET, start, nxt, None
        finally:
            self._pos, self.count = pos, count

    def _pcap_packets(self, buf: bytes) -> Iterator[Packet]:
        """The loop of `_pcap` for `packets()`: each record's `Packet` itself."""
        pos, end, count = self._pos, len(buf), self.count
        unpack = PCAP_RECORD[self.byte_order].unpack_from
        linktype, mul = self.interfaces[0].linktype, self.interfaces[0].ts_mul
        limit, stream_words, new = MAX_RECORD, NEW_STREAM_WORDS, tuple.__new__
        try:
            while end - pos >= 16:
                sec, frac, incl, orig = unpack(buf, pos)
                if sec in stream_words and stream_header_at(buf, pos):
                    self._state = _START  # a new capture stream follows on the same input
                    return
                start = pos + 16
                nxt = start + incl
                if nxt > end or incl > limit:
                    if incl > limit:
                        raise self._error(
                            pos,
                            f"corrupt packet record {count + 1}: captured length {incl} "
                            f"exceeds the limit {MAX_RECORD}",
                        )
                    self._need = 16 + incl
                    return
                pos = nxt
                self.count = count = count + 1
                # Packet(...) without the Python-level __new__ of a NamedTuple
                yield new(
                    Packet,
                    (sec * 1_000_000_000 + frac * mul, incl, orig, buf[start:nxt], 0, linktype),
                )
            self._need = 16
        finally:
            self._pos = pos

    def _pcap_runs(self, buf: bytes) -> Iterator[tuple[str, int, int, object]]:
        """The loop of `_pcap`, collecting (key, record) pairs into one RUN event."""
        first = pos = self._pos
        end = len(buf)
        unpack = PCAP_RECORD[self.byte_order].unpack_from
        mul, add = self.run_key
        per_sec = (1_000_000_000 if self.nanosecond else 1_000_000) * mul
        high, limit, stream_words = self.run_high, MAX_RECORD, NEW_STREAM_WORDS
        run: list[tuple[int, bytes]] = []
        append, error = run.append, None
        while True:
            if end - pos < 16:
                self._need = 16
                break
            sec, frac, incl, _orig = unpack(buf, pos)
            if sec in stream_words and stream_header_at(buf, pos):
                self._state = _START
                break
            nxt = pos + 16 + incl
            if incl > limit or nxt > end:
                if incl > limit:
                    error = self._error(
                        pos,
                        f"corrupt packet record {self.count + len(run) + 1}: captured length "
                        f"{incl} exceeds the limit {MAX_RECORD}",
                    )
                self._need = 16 + incl
                break
            key = sec * per_sec + frac * mul + add
            if key > high:
                high = key
            append((high, buf[pos:nxt]))
            pos = nxt
        self._pos, self.run_high = pos, high
        self.count += len(run)
        if run:
            yield RUN, first, pos, run
        if error is not None:
            raise error

    # -- pcapng blocks --------------------------------------------------------------------

    def _pcapng(self, buf: bytes) -> Iterator[tuple[str, int, int, object]]:
        pos, end, bo = self._pos, len(buf), self.byte_order
        head, u32 = BLOCK_HEADER[bo].unpack_from, U32[bo].unpack_from
        epb = EPB_BODY[bo].unpack_from
        try:
            while True:
                if end - pos < 12:
                    self._need = 12
                    return
                btype, blen = head(buf, pos)
                if btype == PCAPNG_SHB or (
                    btype in PCAP_MAGIC and stream_header_at(buf, pos) == "pcap"
                ):
                    self._state = _START  # a new section or a new pcap stream
                    return
                if blen < MIN_BLOCK.get(btype, 12) or blen % 4 or blen > MAX_BLOCK:
                    raise self._bad_length(pos, btype, blen)
                nxt = pos + blen
                if nxt > end:
                    self._need = blen
                    return
                if u32(buf, nxt - 4)[0] != blen:
                    raise self._error(pos, "corrupt pcapng block: trailing length does not match")
                start, pos = pos, nxt
                if btype == BLOCK_EPB:
                    iface, hi, lo, incl, orig = epb(buf, start + 8)
                    yield (
                        PACKET,
                        start,
                        nxt,
                        self._packet(buf, start, blen, iface, hi, lo, incl, orig),
                    )
                elif btype == BLOCK_IDB:
                    yield INTERFACE, start, nxt, self._interface(buf, start, blen)
                elif btype == BLOCK_SPB:
                    yield PACKET, start, nxt, self._simple_packet(buf, start, blen)
                elif btype == BLOCK_PB:
                    iface, _drops, hi, lo, incl, orig = PB_BODY[bo].unpack_from(buf, start + 8)
                    yield (
                        PACKET,
                        start,
                        nxt,
                        self._packet(buf, start, blen, iface, hi, lo, incl, orig),
                    )
                else:
                    if btype == BLOCK_CB_COPY:
                        self.copiable += 1
                    yield OTHER, start, nxt, btype
        finally:
            self._pos = pos

    def _bad_length(self, pos: int, btype: int, blen: int) -> CaptureFormatError:
        least = MIN_BLOCK.get(btype, 12)
        why = f" (its fixed fields need {least})" if blen < least else ""
        return self._error(pos, f"corrupt pcapng block of type 0x{btype:08x}, length {blen}{why}")

    def _interface(self, buf: bytes, start: int, blen: int) -> Interface:
        iface = parse_idb(self.byte_order, buf, start, blen, len(self.interfaces))
        self.interfaces.append(iface)
        self._native.append(iface.native_ns)
        self.nanosecond = self.nanosecond or iface.ts_mul < 1000 or iface.ts_div > 1
        return iface

    def _no_interface(self, iface: int) -> CaptureFormatError:
        return CaptureFormatError(
            f"{self.name}: packet {self.count + 1} names interface {iface}, "
            f"but the section declares {len(self.interfaces)}"
        )

    def _packet(self, buf, start, blen, iface, hi, lo, incl, orig) -> object:
        """An EPB or (obsolete) PB, checked, as the info of its PACKET event."""
        if 28 + incl > blen - 4 or incl > MAX_RECORD:
            what = (
                "enhanced packet block"
                if BLOCK_EPB in (buf[start], buf[start + 3])
                else "packet block"
            )
            raise self._error(start, f"corrupt {what}: captured length {incl} in {blen} bytes")
        if iface >= len(self.interfaces):
            raise self._no_interface(iface)
        self.count += 1
        decode = self.decode
        if not decode:
            return None
        units = (hi << 32) | lo
        if decode == UNITS:
            return units
        info = self.interfaces[iface]
        ts = units if self._native[iface] else info.ts_ns(units)
        if decode == TIMES:
            return ts
        return Packet(ts, incl, orig, buf[start + 28 : start + 28 + incl], iface, info.linktype)

    def _simple_packet(self, buf: bytes, start: int, blen: int) -> object:
        """A simple packet block: interface 0, no time stamp, length from the block."""
        if not self.interfaces:
            raise self._no_interface(0)
        (orig,) = U32[self.byte_order].unpack_from(buf, start + 8)
        iface = self.interfaces[0]
        incl = min(orig, blen - 16, iface.snaplen or orig)
        if incl > MAX_RECORD:
            raise self._error(start, f"corrupt simple packet block: {incl} captured bytes")
        self.count += 1
        if self.decode == PACKETS:
            return Packet(0, incl, orig, buf[start + 12 : start + 12 + incl], 0, iface.linktype)
        return 0 if self.decode else None  # no time stamp: 0 in any unit
