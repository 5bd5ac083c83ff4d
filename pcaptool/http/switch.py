"""The HTTP/1 → HTTP/2 switch of a connection (and the other ways HTTP/1 ends).

An HTTP/1 parser stops (`Http1Parser.switched`) at a `101 Switching Protocols` with
`Upgrade: h2c` (RFC 7540 section 3.2: the upgraded request becomes stream 1), at the
HTTP/2 client preface sent with prior knowledge (section 3.4), at a tunnel or at bytes
that are not HTTP at all. `switch` moves the connection's analysis on accordingly. A 2xx
answer to `CONNECT` opens a tunnel whose bytes are analysed like a fresh connection (an
inner `HttpStream`, its messages linked to the CONNECT request); other upgrades
(WebSocket) make the connection opaque.
"""

from __future__ import annotations

from pcaptool.http import http1, http2
from pcaptool.tcp.reassembly import Conn


def switch(stream, conn: Conn, i: int, p, ts: int, num: int, rec: dict) -> None:
    """Direction `i`'s parser `p` of `stream` (an `HttpStream`) has switched."""
    how = p.switched
    other = stream.parsers[1 - i]
    if how == "h2":
        _to_h2(stream, i, p, other, ts)
        stream.kind = "h2"
        left = p.leftover
        p.leftover = b""
        if left:
            stream.h2_feed(conn, i, left, ts, num, rec)
    elif how == "tunnel":
        sm = p.switch_msg
        req = sm.request if sm is not None and not p.is_request else None
        if req is not None and req.method == "CONNECT":
            _to_tunnel(stream, conn, i, p, other, req, ts, num, rec)
            return
        if p.is_request:
            return  # CONNECT sent: the client's next bytes wait for the answer
        if other is not None and other.switched is None:
            other.state = http1.SWITCHED
            other.switched = "tunnel"
        p.leftover = b""
    else:  # not_http
        p.leftover = b""


def _to_h2(stream, i: int, p, other, ts: int) -> None:
    h2c = stream.h2 or http2.H2Connection(stream.budget)
    stream.h2 = h2c
    if p.is_request:  # the client sent the preface
        if h2c.client < 0:
            h2c.expect_preface(i)
            if not other.switched:  # prior knowledge: no Upgrade before
                other.state = http1.SWITCHED
                other.switched = "h2"
        return
    # 101 Switching Protocols to h2c: the upgraded request is stream 1
    sm = p.switch_msg
    req = sm.request if sm is not None else None
    hdrs = {}
    if req is not None:
        hdrs = {
            ":method": req.method,
            ":path": req.target,
            ":authority": req.host or "",
            ":scheme": "http",
        }
    trace = (req.trace or None) if req is not None else None
    h2c.upgraded(1 - i, hdrs, req.first_ts if req is not None else ts, trace)


def _to_tunnel(stream, conn: Conn, i: int, p, other, req, ts: int, num: int, rec: dict) -> None:
    """A 2xx to CONNECT (`p` the server's parser): the tunnel's bytes in each direction
    are analysed like a fresh connection, linked to the CONNECT request."""
    from pcaptool.http.stream import HttpStream

    inner = HttpStream(stream.records, "sniff", stream.body_sample, budget=stream.budget)
    inner.tunnel = {"num": req.first_num, "target": req.target}
    stream.inner = inner
    stream.kind = "tunnel"
    left = b""
    if other is not None:
        left = other.leftover
        other.leftover = b""
        other.state = http1.SWITCHED
        other.switched = "tunnel"
    if left:  # the client did not wait for the answer (TLS "false start" of the hello)
        inner.data(conn, 1 - i, left, 0, ts, num, rec)
    left = p.leftover
    p.leftover = b""
    if left:
        inner.data(conn, i, left, 0, ts, num, rec)
