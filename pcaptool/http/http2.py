"""HTTP/2 over cleartext TCP (h2c: prior knowledge, Upgrade, gRPC) from reassembled streams.

Frames of every type (RFC 9113 section 6) are decoded per direction; header blocks are
joined across CONTINUATION frames and decoded with the `hpack` package, one
`hpack.Decoder` per direction so the dynamic table follows the connection (RFC 7541
section 2.3). Streams pair a request (`:method`, `:path`, `:authority`) with its response
(`:status`), the latency between them, and gRPC's `grpc-status`/`grpc-message` trailers.
"""

from __future__ import annotations

import struct

from pcaptool.http import doh
from pcaptool.http.budget import Budget
from pcaptool.http.h2frames import (  # noqa: F401 (re-exported: the frame vocabulary's old home)
    ACK,
    CONT,
    DATA,
    END_HEADERS,
    END_STREAM,
    ERROR_CODES,
    FRAME_HEADER,
    FRAME_TYPES,
    GOAWAY,
    HEADERS,
    MAX_BUFFERED_FRAME,
    MAX_FRAMES_PER_RECORD,
    MAX_HEADER_BLOCK,
    MAX_STREAMS,
    MAX_TABLE_SIZE,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTING_NAMES,
    SETTINGS,
    WINDOW_UPDATE,
    Direction,
    ascii_int,
    error_name,
    goaway_fields,
    ping_fields,
    priority_fields,
    window_update_fields,
)
from pcaptool.http.h2headers import HeaderBlocks
from pcaptool.http.h2stream import Stream
from pcaptool.http.sniff import DEFAULT_MAX_FRAME, find_h2_frame, looks_like_frames

__all__ = ["H2Connection", "Stream", "looks_like_frames", "PREFACE", "error_name"]


class H2Connection(HeaderBlocks):
    """Both directions of one HTTP/2 connection. `feed(d, data, ts)` returns the frames
    and the request/response messages that data completed; `gap(d, size, ts)` says bytes
    of direction `d` were lost; `finish(ts)` flushes the streams still open.

    `mid`: the capture started after the connection did (no preface), so the HPACK
    dynamic tables are not known: unknown references decode as `<unknown>`."""

    __slots__ = (
        "dirs",
        "client",
        "streams",
        "errors",
        "goaway",
        "budget",
        "charged",
        "kept",
        "mid",
    )

    def __init__(self, budget: Budget | None = None, mid: bool = False) -> None:
        self.dirs = (Direction(), Direction())
        self.client = -1  # which direction is the client, once known
        self.streams: dict[int, Stream] = {}
        self.errors: list[tuple[str, str]] = []
        self.goaway = None
        self.mid = mid
        self.budget = budget if budget is not None else Budget()
        self.charged = 0  # what this connection holds, as charged to the budget
        self.kept = 0  # header block bytes of the streams kept

    def release(self) -> None:
        """The connection ended: give back what it held."""
        self.budget.held -= self.charged
        self.charged = 0
        self.streams.clear()
        self.kept = 0
        for st in self.dirs:
            st.buf = b""
            st.block = []
            st.block_size = 0
            st.decoder = None

    def expect_preface(self, d: int) -> None:
        self.dirs[d].preface = True
        self.client = d

    def upgraded(self, client: int, request_headers: dict[str, str], ts: int, trace) -> None:
        """h2c Upgrade (RFC 7540 section 3.2): the HTTP/1.1 request becomes stream 1."""
        self.client = client
        self.dirs[client].preface = True
        s = Stream(1, ts)
        s.req = request_headers
        s.req_end_ts = ts
        s.trace = trace
        self.streams[1] = s

    def gap(self, d: int, size: int, ts: int) -> list:
        """`size` bytes of direction `d` were lost. Inside a DATA payload they are passed
        over; otherwise the direction re-synchronises on the next plausible frame header
        and its HPACK table becomes unknown (the lost bytes may have changed it)."""
        st = self.dirs[d]
        msgs: list = []
        if st.broken:
            return msgs
        for sid in self.streams:  # a DNS body that lost bytes is not decoded
            self._doh_drop(d, sid)
        if st.skip and size <= st.skip and not st.buf:
            st.skip -= size
            f = st.skip_frame
            if not st.skip:
                st.skip_frame = None
                self._data_done(d, f, ts, msgs)
            return msgs
        st.buf = b""
        st.skip = 0
        st.skip_frame = None
        st.block = []
        st.block_frame = None
        st.preface = False
        st.started = True
        st.resync = True
        if st.decoder is not None:
            st.decoder.forget()
        self.errors.append(("gap", f"{size} bytes lost; re-synchronising on the next frame"))
        return msgs

    def finish(self, ts: int) -> list:
        """End of the input (or of the connection): every stream still open is flushed as
        an `incomplete` response with what is known."""
        msgs = [(s, s.response_dict(ts, incomplete=True)) for s in self.streams.values()]
        self.streams.clear()
        self.kept = 0
        return msgs

    def feed(self, d: int, data: bytes, ts: int) -> tuple[list, list]:
        """Frames and messages of the next bytes of direction `d`; what the connection
        then holds is charged to the budget (past it, the analysis stops: memory_cap)."""
        out = self._feed(d, data, ts)
        held = self.kept
        for st in self.dirs:
            held += len(st.buf) + st.block_size + (st.table_size if st.decoder else 0)
        budget = self.budget
        budget.held += held - self.charged
        self.charged = held
        if budget.over() and held:
            self.errors.append(("memory_cap", f"HTTP analysis holds {budget.held} bytes"))
            self.release()
            for st in self.dirs:
                st.broken = True
        return out

    def _feed(self, d: int, data: bytes, ts: int) -> tuple[list, list]:
        st = self.dirs[d]
        frames: list = []
        msgs: list = []
        if st.broken:
            return frames, msgs
        if not st.started:
            st.started = True
            # the server may speak first (its SETTINGS): the client's preface still comes
            if data[:24] == PREFACE[: len(data[:24])]:
                st.preface = True
                self.client = d
        if st.buf:
            data = st.buf + data
            st.buf = b""
        pos = 0
        n = len(data)
        if st.skip:
            take = min(st.skip, n)
            st.skip -= take
            pos = take
            self._doh_data(d, st.skip_frame["stream_id"], data, 0, take)
            if not st.skip:
                f = st.skip_frame
                st.skip_frame = None
                frames.append(f)
                self._data_done(d, f, ts, msgs)
        if st.preface:
            if n - pos < len(PREFACE) and PREFACE.startswith(data[pos:]):
                st.buf = data[pos:]
                return frames, msgs
            if data.startswith(PREFACE, pos):
                pos += len(PREFACE)
                frames.append({"type": "PREFACE"})
            else:
                self.errors.append(("bad_preface", repr(data[pos : pos + 24])[2:-1]))
            st.preface = False
        if st.resync:
            pos = self._resync(d, st, data, pos)
            if pos < 0:
                return frames, msgs
        self._frames(d, st, data, pos, ts, frames, msgs)
        for f in frames:
            f.pop("_pad", None)
        return frames, msgs

    # -- internals --------------------------------------------------------------------

    def _resync(self, d: int, st: Direction, data: bytes, pos: int) -> int:
        """After a gap: the offset of the next plausible frame header, or -1 (the last 8
        bytes are kept, a header may straddle two segments)."""
        client = d == self.client
        p = find_h2_frame(data, pos, self.dirs[1 - d].max_frame, client)
        if p < 0:
            keep = max(pos, len(data) - 8)
            st.skipped += keep - pos
            st.buf = data[keep:]
            return -1
        st.skipped += p - pos
        if st.skipped:
            self.errors.append(("resync", f"{st.skipped} bytes skipped to the next frame header"))
        st.skipped = 0
        st.resync = False
        return p

    def _frames(self, d: int, st: Direction, data: bytes, pos: int, ts, frames, msgs) -> None:
        n = len(data)
        while n - pos >= 9:
            hi, lo, ftype, flags, sid = FRAME_HEADER.unpack_from(data, pos)
            length = (hi << 8) | lo
            sid &= 0x7FFFFFFF
            end = pos + 9 + length
            if end > n:
                if ftype == DATA:
                    # pass over the payload as it arrives rather than buffering it
                    f = self._frame(ftype, flags, sid, length)
                    f["_pad"] = 0
                    st.skip = end - n
                    st.skip_frame = f
                    self._count_data(d, sid, length)
                    if flags & PADDED:  # its padding comes in a later segment: not kept
                        self._doh_drop(d, sid)
                    else:
                        self._doh_data(d, sid, data, pos + 9, n)
                    return
                if length > MAX_BUFFERED_FRAME:
                    name = FRAME_TYPES[ftype] if ftype < 10 else ftype
                    self.errors.append(("frame_too_large", f"{name} of {length} bytes"))
                    st.resync = True
                    pos = self._resync(d, st, data, pos + 1)
                    if pos < 0:
                        return
                    continue
                break
            if len(frames) < MAX_FRAMES_PER_RECORD:
                f = self._frame(ftype, flags, sid, length)
                frames.append(f)
            else:
                f = {}
            self._handle(d, st, ftype, flags, sid, data, pos + 9, end, f, ts, msgs)
            pos = end
            if st.broken:
                return
        if pos < n:
            st.buf = data[pos:]

    @staticmethod
    def _frame(ftype: int, flags: int, sid: int, length: int) -> dict:
        return {
            "type": FRAME_TYPES[ftype] if ftype < 10 else f"UNKNOWN_{ftype}",
            "stream_id": sid,
            "length": length,
            "flags": flags,
        }

    def _stream(self, sid: int, ts: int) -> Stream:
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = Stream(sid, ts)
            if len(self.streams) > MAX_STREAMS:
                old = next(iter(self.streams))
                self.kept -= self.streams.pop(old).held
                self.errors.append(
                    ("too_many_streams", f"over {MAX_STREAMS}: stream {old} dropped")
                )
        return s

    def _count_data(self, d: int, sid: int, length: int) -> None:
        s = self.streams.get(sid)
        if s is not None:
            if d == self.client:
                s.req_bytes += length
                s.req_size += length
            else:
                s.resp_bytes += length
                s.resp_size += length

    def _data_done(self, d: int, f: dict, ts: int, msgs: list) -> None:
        if f["flags"] & END_STREAM:
            self._end_stream(d, f["stream_id"], ts, msgs)

    def _end_stream(self, d: int, sid: int, ts: int, msgs: list) -> None:
        s = self.streams.get(sid)
        if s is None:
            return
        body = s.doh[d != self.client]
        if body is not None:
            self._doh_drop(d, sid)
            dns, why = doh.decoded(body)
            if dns is not None:
                msgs.append((s, {"type": "dns", "dns": dns}))
            else:
                self.errors.append(("doh_not_dns", f"stream {sid}: {why}"))
        if d == self.client:
            s.req_end_ts = ts
        else:
            msgs.append((s, s.response_dict(ts)))
            del self.streams[sid]
            self.kept -= s.held

    def _doh_data(self, d: int, sid: int, data: bytes, start: int, end: int) -> None:
        """DATA payload bytes of direction `d` of stream `sid`: kept when its body is a
        DNS message (pcaptool/http/doh.py), charged to the budget."""
        s = self.streams.get(sid)
        if s is None or end <= start:
            return
        body = s.doh[d != self.client]
        if body is None:
            return
        if len(body) + end - start > doh.MAX_MESSAGE:
            self._doh_drop(d, sid)
            self.errors.append(("doh_not_dns", f"stream {sid}: body over {doh.MAX_MESSAGE} bytes"))
            return
        body += data[start:end]
        s.held += end - start
        self.kept += end - start

    def _doh_drop(self, d: int, sid: int) -> None:
        """Stop keeping the DNS body of direction `d` of stream `sid` (if any)."""
        s = self.streams.get(sid)
        body = s.doh[d != self.client] if s is not None else None
        if body is not None:
            s.held -= len(body)
            self.kept -= len(body)
            s.doh[d != self.client] = None

    def _reset(self, d: int, sid: int, code: str, ts: int, msgs: list) -> None:
        """RST_STREAM: an event on the stream. The server's reset ends the stream (its
        response is what was received); after the client's, the server's HEADERS that
        may still come are the response."""
        s = self.streams.get(sid)
        if s is None:
            return
        s.reset = code
        s.reset_by = "client" if d == self.client else "server"
        msgs.append((s, s.reset_dict(ts)))
        if s.reset_by == "server":
            del self.streams[sid]
            self.kept -= s.held
            msgs.append((s, s.response_dict(ts)))

    def _handle(self, d, st, ftype, flags, sid, data, start, end, f, ts, msgs) -> None:
        if ftype == DATA:
            pad = data[start] if flags & PADDED and end > start else 0
            f["_pad"] = pad
            self._count_data(d, sid, end - start)
            self._doh_data(d, sid, data, start + (1 if flags & PADDED else 0), end - pad)
            if flags & END_STREAM:
                self._end_stream(d, sid, ts, msgs)
        elif ftype in (HEADERS, PUSH_PROMISE):
            self._header_frame(d, st, ftype, flags, sid, data, start, end, f, ts, msgs)
        elif ftype == CONT:
            self._continuation(d, st, flags, sid, data, start, end, f, ts, msgs)
        elif ftype == RST_STREAM:
            if end - start >= 4:
                f["error"] = error_name(int.from_bytes(data[start : start + 4]))
                self._reset(d, sid, f["error"], ts, msgs)
        elif ftype == SETTINGS:
            if not flags & ACK:
                self._settings(d, st, data, start, end, f)
        elif ftype == PING:
            ping_fields(data, start, end, f)
        elif ftype == GOAWAY:
            if end - start >= 8:
                goaway_fields(data, start, end, f)
                self.goaway = f["error"]
        elif ftype == WINDOW_UPDATE:
            window_update_fields(data, start, end, f)
        elif ftype == PRIORITY:
            priority_fields(data, start, end, f)

    def _settings(self, d: int, st: Direction, data: bytes, start: int, end: int, f) -> None:
        settings = {}
        for p in range(start, end - 5, 6):
            ident, value = struct.unpack_from(">HI", data, p)
            settings[SETTING_NAMES.get(ident, str(ident))] = value
            if ident == 1:
                # the peer's decoder table size bounds what this direction's encoder may
                # use, i.e. what the *other* direction's decoder must accept
                if value > MAX_TABLE_SIZE:
                    self.errors.append(
                        ("table_size_capped", f"HEADER_TABLE_SIZE {value} > {MAX_TABLE_SIZE}")
                    )
                    value = MAX_TABLE_SIZE
                other = self.dirs[1 - d]
                other.table_size = value
                if other.decoder is not None:
                    other.decoder.max_allowed = min(value, 1 << 16)
            elif ident == 5:
                st.max_frame = max(value, DEFAULT_MAX_FRAME)
        f["settings"] = settings
