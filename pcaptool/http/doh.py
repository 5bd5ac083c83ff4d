"""DNS over HTTPS (RFC 8484) carried by HTTP/2: the body of a request or response whose
`content-type` is `application/dns-message` is one DNS message. Like tshark, the body is
reassembled from the stream's DATA frames and decoded when that side ends the stream
(END_STREAM); the DNS object goes on the record of the packet that ended it.

A body is kept only for such streams, at most 65,535 bytes (a DNS message's limit), and
charged to the connection's HTTP memory budget while it is held. A body that lost bytes
(a gap, a padded DATA frame split over segments) is not decoded."""

from __future__ import annotations

from pcaptool.decode import Truncated
from pcaptool.decode.dns import message

MEDIA_TYPE = "application/dns-message"
MAX_MESSAGE = 65535


def carries_dns(headers: dict[str, str]) -> bool:
    """The header block says its body is a DNS message."""
    ctype = headers.get("content-type")
    return ctype is not None and ctype.partition(";")[0].strip().lower() == MEDIA_TYPE


def decoded(body: bytearray) -> tuple[dict | None, str | None]:
    """The body as a DNS message (the record's `dns` object), or why it is not one."""
    rec: dict = {}
    try:
        return message(bytes(body), rec, cut=False), None
    except Truncated as exc:
        return None, exc.reason
