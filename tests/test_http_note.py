"""`pcaptool.http.records.note`, the end of a packet's message, on every shape of `http`
object the analyzers write: checked against the note's definition (one part per message,
joined with "; ") written out plainly here."""

from __future__ import annotations

import itertools

from pcaptool.http.records import note
from pcaptool.record.envelope import format_latency


def _by_the_definition(h: dict) -> str:
    parts = []
    for m in [h, *h.get("more", ())]:
        t = m.get("type")
        proto = "HTTP/2" if m.get("version") == "HTTP/2" else "HTTP"
        if t == "request":
            parts.append(f"{proto} {m.get('method')} {m.get('target')}")
        elif t in ("response", "response_headers", "reset"):
            r = m.get("request")
            s = (
                "HTTP/0.9 response"
                if m.get("version") == "HTTP/0.9"
                else f"{proto} {m.get('status')}"
            )
            if t == "response_headers":
                s += " headers"
            elif m.get("incomplete"):
                s += " incomplete"
            if r:
                s += f" ({r.get('method')} {r.get('target')}) {format_latency(m['latency'])}"
            if "grpc_status" in m:
                s += f" grpc-status={m['grpc_status']}"
            if m.get("reset"):
                s += f" reset={m['reset']} by {m.get('reset_by')}"
            parts.append(s)
        if "error" in m:
            parts.append(f"HTTP error {m['error']['code']}")
    return "; ".join(parts)


def _messages():
    req = {"method": "GET", "target": "/a?b=1"}
    err = {"error": {"code": "gap", "detail": "x"}}
    yield {"type": "error", **err}
    yield {"type": "other"}
    for version in ("HTTP/1.1", "HTTP/2", "HTTP/0.9", None):
        v = {"version": version} if version else {}
        yield {"type": "request", "method": "POST", "target": "/x", **v}
        yield {"type": "request", **v, **err}
        for t, extra in itertools.product(
            ("response", "response_headers", "reset"),
            (
                {},
                {"incomplete": True},
                {"incomplete": False},
                {"request": req, "latency": 1_500},
                {"request": {}, "latency": 7},
                {"grpc_status": 0},
                {"reset": "CANCEL", "reset_by": "client"},
                {"reset": None},
                err,
            ),
        ):
            yield {"type": t, "status": 200, **v, **extra}


def test_note_of_one_message_and_of_several_follows_the_definition():
    msgs = list(_messages())
    for m in msgs:
        assert note({"http": m}) == _by_the_definition(m), m
    for a, b, c in zip(msgs, msgs[1:] + msgs[:1], msgs[2:] + msgs[:2], strict=True):
        h = {**a, "more": [b, c]}
        assert note({"http": h}) == _by_the_definition(h), h


def test_note_of_packets_without_http():
    assert note({}) is None
    assert note({"tcp": {}, "tls": {"sni": "x"}}) is None
    tls = {"reassembled": True, "sni": "a.example", "alpn": ["h2", "http/1.1"]}
    assert note({"tls": tls}) == "TLS ClientHello sni=a.example alpn=h2,http/1.1"
    frames = [{"type": "SETTINGS", "stream_id": 0}, {"type": "HEADERS", "stream_id": 1}] * 4
    assert note({"http2": {"frames": frames}}) == (
        "HTTP/2 SETTINGS, HEADERS[1], SETTINGS, HEADERS[1], SETTINGS, HEADERS[1], …"
    )
