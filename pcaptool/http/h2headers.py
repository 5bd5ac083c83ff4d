"""Header blocks of HTTP/2 (RFC 9113 section 4.3): HEADERS and PUSH_PROMISE frames, their
CONTINUATIONs, HPACK decoding, and what the decoded headers mean for the stream. A mixin
of `pcaptool.http.http2.H2Connection`, which provides `_stream` and `_end_stream`."""

from __future__ import annotations

from pcaptool.http.doh import carries_dns
from pcaptool.http.h2frames import (
    END_HEADERS,
    END_STREAM,
    MAX_HEADER_BLOCK,
    PADDED,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    Direction,
)
from pcaptool.http.hpack_tolerant import TolerantDecoder


class HeaderBlocks:
    """Header block assembly and decoding for both directions of a connection."""

    __slots__ = ()

    def _header_frame(self, d, st, ftype, flags, sid, data, start, end, f, ts, msgs) -> None:
        """HEADERS or PUSH_PROMISE: a header block, whole or awaiting CONTINUATION."""
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

    def _continuation(self, d, st, flags, sid, data, start, end, f, ts, msgs) -> None:
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

    def _block_too_large(self, st: Direction, sid: int, size: int) -> None:
        self.errors.append(
            ("header_block_too_large", f"stream {sid}: over {MAX_HEADER_BLOCK} bytes ({size})")
        )
        st.block = []
        st.block_size = 0
        st.block_frame = None
        st.broken = True

    def _decode(self, st: Direction, sid: int, block: bytes, f: dict) -> list:
        dec = st.decoder
        if dec is None:
            dec = st.decoder = TolerantDecoder(not self.mid, st.table_size)
        res = dec.decode(block)
        if res.error is not None:
            f["error"] = f"hpack: {res.error}"
            self.errors.append(("hpack_error", f"stream {sid}: {res.error}"))
        if res.unknown:
            f["hpack_unknown"] = res.unknown
            if dec.complete and res.error is None:
                f["error"] = "hpack: unknown table index"
                self.errors.append(
                    ("hpack_error", f"stream {sid}: {res.unknown} references to unknown entries")
                )
        return res.fields

    def _headers(self, d, st, ftype, flags, sid, block: bytes, f: dict, ts, msgs) -> None:
        pairs = self._decode(st, sid, block, f)
        headers: dict[str, str] = {}
        hl = []
        unknown = 0
        for name, value in pairs:
            k = name.decode("utf-8", "replace")
            v = value.decode("utf-8", "replace")
            hl.append([k, v])
            if k == "<unknown>" or v == "<unknown>":
                unknown += 1
            old = headers.get(k)
            headers[k] = v if old is None else old + ", " + v
        f["headers"] = hl
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
        s.unknown += unknown
        size = len(block)
        kept = _decoded_size(pairs)  # HPACK inflates: charge what is kept, not what came
        s.held += kept
        self.kept += kept
        if d == self.client:
            if s.req is None:
                s.req = headers
                s.first_ts = ts
                s.req_size += size
                if carries_dns(headers):
                    s.doh[0] = bytearray()
                msgs.append((s, s.request_dict()))
            else:  # request trailers
                s.req_size += size
        elif s.resp is None or ":status" in headers:
            informational = headers.get(":status", "").startswith("1")
            if s.resp is None or not informational:
                s.resp = headers
                if not informational and carries_dns(headers):
                    s.doh[1] = bytearray()
            s.resp_size += size
            if not informational and not flags & END_STREAM:
                msgs.append((s, s.headers_dict(ts)))
        else:
            s.trailers = headers
            s.resp_size += size
        if flags & END_STREAM:
            self._end_stream(d, sid, ts, msgs)


def _decoded_size(pairs) -> int:
    """What a decoded header list costs: name, value and ~100 bytes of Python each."""
    return sum(len(n) + len(v) + 100 for n, v in pairs)
