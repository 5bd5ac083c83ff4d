"""HTTP/2 over cleartext TCP (h2c: prior knowledge, Upgrade, gRPC) from reassembled streams.

Frames of every type (RFC 9113 section 6) are decoded per direction; header blocks are
joined across CONTINUATION frames and decoded with the `hpack` package, one
`hpack.Decoder` per direction so the dynamic table follows the connection (RFC 7541
section 2.3). Streams pair a request (`:method`, `:path`, `:authority`) with its response
(`:status`), the latency between them, and gRPC's `grpc-status`/`grpc-message` trailers.
"""

from __future__ import annotations

import struct

from pcaptool.http.budget import Budget

FRAME_HEADER = struct.Struct(">HBBBI")  # 24-bit length as 16+8 bits, type, flags, stream id
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

FRAME_TYPES = (
    "DATA",
    "HEADERS",
    "PRIORITY",
    "RST_STREAM",
    "SETTINGS",
    "PUSH_PROMISE",
    "PING",
    "GOAWAY",
    "WINDOW_UPDATE",
    "CONTINUATION",
)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONT = (
    range(10)
)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# RFC 9113 section 7
ERROR_CODES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
SETTING_NAMES = {
    0x1: "HEADER_TABLE_SIZE",
    0x2: "ENABLE_PUSH",
    0x3: "MAX_CONCURRENT_STREAMS",
    0x4: "INITIAL_WINDOW_SIZE",
    0x5: "MAX_FRAME_SIZE",
    0x6: "MAX_HEADER_LIST_SIZE",
    0x8: "ENABLE_CONNECT_PROTOCOL",
    0x9: "NO_RFC7540_PRIORITIES",
}
# non-DATA frames larger than this are reported, not kept: a header block fragment over
# MAX_HEADER_BLOCK is refused anyway, and other frames are a few bytes (SETTINGS, PING, …)
MAX_BUFFERED_FRAME = 64 * 1024 + 300
MAX_STREAMS = (
    256  # open streams kept per connection (SETTINGS_MAX_CONCURRENT_STREAMS is usually 100-250)
)
MAX_FRAMES_PER_RECORD = 64
# A header block (HEADERS/PUSH_PROMISE and its CONTINUATIONs) past this is given up, and
# the direction with it (its HPACK table is then unknown): a CONTINUATION flood costs
# 64 KiB, not memory that grows with it (CVE-2024-27316 class; servers use 64 KiB too).
MAX_HEADER_BLOCK = 64 * 1024
# The dynamic table size we honour, whatever SETTINGS_HEADER_TABLE_SIZE a peer announces
# (RFC 7541 section 4.2 lets the encoder use up to it): 64 KiB, 16 times the default.
MAX_TABLE_SIZE = 64 * 1024


def ascii_int(text: str | None) -> int | None:
    """A number of ASCII digits only (`int()` takes `²²²` or raises on it), else None."""
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def error_name(code: int) -> str:
    return ERROR_CODES.get(code, f"0x{code:x}")


def looks_like_frames(data: bytes) -> bool:
    """Mid-connection capture without the preface: do these bytes start with a run of
    plausible HTTP/2 frames that ends exactly at the end of the data?"""
    pos = 0
    n = len(data)
    frames = 0
    while pos + 9 <= n:
        hi, lo, ftype, flags, sid = FRAME_HEADER.unpack_from(data, pos)
        length = (hi << 8) | lo
        if ftype > 9 or sid & 0x80000000 or length > 1 << 20:
            return False
        if ftype in (SETTINGS, PING, GOAWAY) and sid != 0:
            return False
        if ftype in (DATA, HEADERS, PRIORITY, RST_STREAM, CONT) and sid == 0:
            return False
        pos += 9 + length
        frames += 1
    return frames > 0 and pos == n


class Stream:
    """One HTTP/2 stream: a request and its response."""

    __slots__ = (
        "sid",
        "req",
        "resp",
        "trailers",
        "first_ts",
        "req_end_ts",
        "req_bytes",
        "resp_bytes",
        "trace",
        "reset",
        "req_size",
        "resp_size",
        "first_num",
        "held",
    )

    def __init__(self, sid: int, ts: int) -> None:
        self.sid = sid
        self.req: dict[str, str] | None = None
        self.resp: dict[str, str] | None = None
        self.trailers: dict[str, str] | None = None
        self.first_ts = ts
        self.req_end_ts = None
        self.req_bytes = 0
        self.resp_bytes = 0
        self.trace = None
        self.reset = None
        self.req_size = 0  # header block + DATA payload bytes, for httpRequest sizes
        self.resp_size = 0
        self.first_num = 0
        self.held = 0  # header block bytes kept (charged to the connection's budget)

    def request_dict(self) -> dict:
        r = self.req or {}
        return {
            "type": "request",
            "version": "HTTP/2",
            "stream_id": self.sid,
            "method": r.get(":method"),
            "target": r.get(":path"),
            "host": r.get(":authority") or r.get("host"),
            "scheme": r.get(":scheme"),
            "headers": r,
        }

    def response_dict(self, ts: int) -> dict:
        resp = self.resp or {}
        status = resp.get(":status")
        d = {
            "type": "response",
            "version": "HTTP/2",
            "stream_id": self.sid,
            "status": ascii_int(status),
            "headers": resp,
            "body_size": self.resp_bytes,
        }
        r = self.req
        if r is not None:
            d["request"] = {
                "method": r.get(":method"),
                "target": r.get(":path"),
                "host": r.get(":authority") or r.get("host"),
            }
            if self.first_num:
                d["request"]["num"] = self.first_num
            d["latency"] = ts - self.first_ts
        t = self.trailers
        if t:
            d["trailers"] = t
        g = (t or {}).get("grpc-status") or resp.get("grpc-status")
        if g is not None:
            n = ascii_int(g)
            d["grpc_status"] = n if n is not None else g
            msg = (t or {}).get("grpc-message") or resp.get("grpc-message")
            if msg is not None:
                d["grpc_message"] = msg
        if self.reset:
            d["reset"] = self.reset
        return d


class Direction:
    """Frame decoding state of one direction."""

    __slots__ = (
        "buf",
        "decoder",
        "preface",
        "skip",
        "skip_frame",
        "block",
        "block_size",
        "block_frame",
        "broken",
        "table_size",
        "started",
    )

    def __init__(self) -> None:
        self.buf = b""
        self.decoder = None
        self.preface = False  # True while the client preface is still expected
        self.skip = 0  # DATA payload bytes still to pass over
        self.skip_frame: dict | None = None
        self.block: list[bytes] = []  # header block fragments awaiting CONTINUATION
        self.block_size = 0
        self.block_frame: dict | None = None
        self.broken = False
        self.table_size = 4096
        self.started = False


class H2Connection:
    """Both directions of one HTTP/2 connection. `feed(d, data, ts)` returns the frames
    and the request/response messages that data completed."""

    __slots__ = ("dirs", "client", "streams", "errors", "goaway", "budget", "charged", "kept")

    def __init__(self, budget: Budget | None = None) -> None:
        self.dirs = (Direction(), Direction())
        self.client = -1  # which direction is the client, once known
        self.streams: dict[int, Stream] = {}
        self.errors: list[tuple[str, str]] = []
        self.goaway = None
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
                    pos = n
                    break
                if length > MAX_BUFFERED_FRAME:
                    self.errors.append(
                        (
                            "frame_too_large",
                            f"{FRAME_TYPES[ftype] if ftype < 10 else ftype} of {length} bytes",
                        )
                    )
                    st.broken = True
                    return frames, msgs
                break
            if len(frames) < MAX_FRAMES_PER_RECORD:
                f = self._frame(ftype, flags, sid, length)
                frames.append(f)
            else:
                f = {}
            self._handle(d, st, ftype, flags, sid, data, pos + 9, end, f, ts, msgs)
            pos = end
            if st.broken:
                return frames, msgs
        if pos < n:
            st.buf = data[pos:]
        for f in frames:
            f.pop("_pad", None)
        return frames, msgs

    # -- internals --------------------------------------------------------------------

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
        if d == self.client:
            s.req_end_ts = ts
        else:
            msgs.append((s, s.response_dict(ts)))
            del self.streams[sid]
            self.kept -= s.held

    def _handle(self, d, st, ftype, flags, sid, data, start, end, f, ts, msgs) -> None:
        if ftype == DATA:
            pad = data[start] if flags & PADDED and end > start else 0
            f["_pad"] = pad
            self._count_data(d, sid, end - start)
            if flags & END_STREAM:
                self._end_stream(d, sid, ts, msgs)
        elif ftype in (HEADERS, PUSH_PROMISE):
            p = start
            pad = 0
            if flags & PADDED and end > p:
                pad = data[p]
                p += 1
            if ftype == PUSH_PROMISE:
                if end - p >= 4:
                    f["promised_stream_id"] = int.from_bytes(data[p : p + 4]) & 0x7FFFFFFF
                p += 4
            elif flags & PRIORITY_FLAG:
                p += 5
            frag = data[p : max(p, end - pad)]
            if len(frag) > MAX_HEADER_BLOCK:
                self._block_too_large(st, sid, len(frag))
            elif flags & END_HEADERS:
                self._headers(d, st, ftype, flags, sid, frag, f, ts, msgs)
            else:
                st.block = [frag]
                st.block_size = len(frag)
                st.block_frame = {"ftype": ftype, "flags": flags, "sid": sid, "f": f}
        elif ftype == CONT:
            bf = st.block_frame
            if bf is None or bf["sid"] != sid:
                self.errors.append(("unexpected_continuation", f"stream {sid}"))
                return
            st.block.append(data[start:end])
            st.block_size += end - start + 9  # frame headers count: empty ones add up too
            if st.block_size > MAX_HEADER_BLOCK:
                self._block_too_large(st, sid, st.block_size)
            elif flags & END_HEADERS:
                frag = b"".join(st.block)
                st.block = []
                st.block_frame = None
                # the decoded headers go on the CONTINUATION that completed the block
                self._headers(d, st, bf["ftype"], bf["flags"], sid, frag, f, ts, msgs)
        elif ftype == RST_STREAM:
            if end - start >= 4:
                code = int.from_bytes(data[start : start + 4])
                f["error"] = error_name(code)
                s = self.streams.pop(sid, None)
                if s is not None:
                    self.kept -= s.held
                    s.reset = f["error"]
                    msgs.append((s, s.response_dict(ts)))
        elif ftype == SETTINGS:
            if flags & ACK:
                return
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
                        other.decoder.max_allowed_table_size = value
            f["settings"] = settings
        elif ftype == PING:
            f["opaque"] = data[start:end].hex()
        elif ftype == GOAWAY:
            if end - start >= 8:
                last, code = struct.unpack_from(">II", data, start)
                f["last_stream_id"] = last & 0x7FFFFFFF
                f["error"] = error_name(code)
                if end - start > 8:
                    f["debug"] = data[start + 8 : min(end, start + 136)].decode("utf-8", "replace")
                self.goaway = f["error"]
        elif ftype == WINDOW_UPDATE:
            if end - start >= 4:
                f["increment"] = int.from_bytes(data[start : start + 4]) & 0x7FFFFFFF
        elif ftype == PRIORITY and end - start >= 5:
            dep = int.from_bytes(data[start : start + 4])
            f["dependency"] = dep & 0x7FFFFFFF
            f["exclusive"] = bool(dep >> 31)
            f["weight"] = data[start + 4] + 1

    def _block_too_large(self, st: Direction, sid: int, size: int) -> None:
        self.errors.append(
            ("header_block_too_large", f"stream {sid}: over {MAX_HEADER_BLOCK} bytes ({size})")
        )
        st.block = []
        st.block_size = 0
        st.block_frame = None
        st.broken = True

    def _headers(self, d, st, ftype, flags, sid, block: bytes, f: dict, ts, msgs) -> None:
        dec = st.decoder
        if dec is None:
            import hpack

            dec = st.decoder = hpack.Decoder()
            dec.max_allowed_table_size = st.table_size
        try:
            pairs = dec.decode(block, raw=True)
        except Exception as exc:  # hpack.HPACKError and friends: table now out of sync
            f["error"] = f"hpack: {type(exc).__name__}"
            self.errors.append(("hpack_error", f"stream {sid}: {type(exc).__name__}: {exc}"))
            return
        headers: dict[str, str] = {}
        for name, value in pairs:
            k = name.decode("utf-8", "replace")
            v = value.decode("utf-8", "replace")
            old = headers.get(k)
            headers[k] = v if old is None else old + ", " + v
        f["headers"] = [
            [n.decode("utf-8", "replace"), v.decode("utf-8", "replace")] for n, v in pairs
        ]
        if ftype == PUSH_PROMISE:
            promised = f.get("promised_stream_id")
            if promised:
                s = self._stream(promised, ts)
                s.req = headers
                kept = _decoded_size(pairs)
                s.held += kept
                self.kept += kept
            return
        if self.client < 0:
            if ":method" in headers:
                self.client = d
            elif ":status" in headers:
                self.client = 1 - d
        s = self._stream(sid, ts)
        size = len(block)
        kept = _decoded_size(pairs)  # HPACK inflates: charge what is kept, not what came
        s.held += kept
        self.kept += kept
        if d == self.client:
            if s.req is None:
                s.req = headers
                s.first_ts = ts
                s.req_size += size
                msgs.append((s, s.request_dict()))
            else:  # request trailers
                s.req_size += size
        elif s.resp is None or (":status" in headers and headers[":status"].startswith("1")):
            s.resp = headers
            s.resp_size += size
        else:
            s.trailers = headers
            s.resp_size += size
        if flags & END_STREAM:
            self._end_stream(d, sid, ts, msgs)


def _decoded_size(pairs) -> int:
    """What a decoded header list costs: name, value and ~100 bytes of Python each."""
    return sum(len(n) + len(v) + 100 for n, v in pairs)
