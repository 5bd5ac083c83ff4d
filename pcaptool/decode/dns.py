"""DNS messages (RFC 1035) over UDP, or over TCP with the 2-byte length prefix.

The header and the record framing are read here; every record's data is dnspython's
(`dns.rdata.from_wire_parser`), so every type decodes: DNSSEC (RRSIG, NSEC, NSEC3,
DNSKEY, DS), SVCB/HTTPS, CAA, TXT, SRV, ... in zone-file presentation form, and types
nobody knows in RFC 3597's `\\# len hex`. OPT becomes `edns` with its options.

A message that ends before the records its header counts is `truncated` when the snap
length cut the packet, `incomplete` when it continues in a later TCP segment, and an
error otherwise (the header and the records that parsed are kept).

Most messages (names, A/AAAA/CNAME/NS/PTR/DNAME answers, OPT) are read here without
dnspython, which is imported the first time a record needs it: importing it costs about
0.1 CPU second, more than many captures' DNS (`_dnspython`).
"""

from __future__ import annotations

import contextlib
import re
import struct
from functools import cache
from socket import AF_INET, AF_INET6, inet_ntop

import dns.exception

from pcaptool.decode import Step, Truncated

MDNS_PORT = 5353
DNS_PORTS = frozenset((53, MDNS_PORT, 5355))
HEADER = struct.Struct("!HHHHHH")
HEADER_START = struct.Struct("!HH")  # id, flags
RR = struct.Struct("!HHIH")
QUESTION = struct.Struct("!HH")
OPT = 41
NAME_TYPES = frozenset((2, 5, 12, 39))  # NS, CNAME, PTR, DNAME: the data is one name
# Label bytes dnspython writes as they are (anything else it escapes: \. or \ddd).
SAFE_LABEL = re.compile(rb"[\x21\x23\x25-\x27\x2a-\x2d\x2f-\x3a\x3c-\x3f\x41-\x5b\x5d-\x7e]*\Z")
MAX_RRS = 64  # records listed per section (the counts say how many there are)
MAX_DATA = 1024  # characters of one record's data
PARSE_ERRORS = (
    dns.exception.DNSException,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    UnicodeError,
    OverflowError,
    TypeError,
)

OPCODES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}
RCODES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}
FLAGS = ((0x400, "aa"), (0x200, "tc"), (0x100, "rd"), (0x80, "ra"), (0x20, "ad"), (0x10, "cd"))


# dnspython's names of the usual types and classes (tests/test_dns_names.py checks them
# against dnspython); others are asked of dnspython.
TYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 51: "NSEC3PARAM", 64: "SVCB", 65: "HTTPS",
    255: "ANY", 257: "CAA",
}  # fmt: skip
CLASS_NAMES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}


class _Cut(Exception):
    """The message ended before the records its header counts."""


class _Wire:
    """The read position in a message, as dnspython's wire parser keeps it (`wire`,
    `current`, `end`), without importing dnspython; running out of bytes is `_Cut`."""

    __slots__ = ("wire", "current", "end")

    def __init__(self, wire: bytes, current: int) -> None:
        self.wire, self.current, self.end = wire, current, len(wire)

    def remaining(self) -> int:
        return self.end - self.current

    def get_struct(self, fmt: struct.Struct) -> tuple:
        pos = self.current
        if pos + fmt.size > self.end:
            raise _Cut
        self.current = pos + fmt.size
        return fmt.unpack_from(self.wire, pos)

    def get_bytes(self, size: int) -> bytes:
        pos = self.current
        self.current = pos + size
        return self.wire[pos : pos + size]

    def seek(self, where: int) -> None:
        self.current = where


@cache
def _dnspython():
    """dnspython's modules, imported the first time a record needs them."""
    import dns.edns
    import dns.name
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.wire

    return dns


def dns_udp(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    udp, ip = rec.get("udp", {}), rec.get("ip", {})
    mdns = MDNS_PORT in (udp.get("sport"), udp.get("dport"))
    if end - off < udp.get("len", 0) and "MF" in ip.get("flags", ()):
        # A first fragment the snap length cut (not reassembled): the rest is in later packets.
        message(bytes(buf[off:end]), rec, cut=True, what="incomplete", mdns=mdns)
    else:
        cut = rec.get("pcap", {}).get("truncated", False)
        message(bytes(buf[off:end]), rec, cut=cut, mdns=mdns)
    return None


def dns_tcp(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    """One DNS message after its length prefix; a segment that does not start one (the
    middle of a message split over segments) is left as plain TCP, also when its bytes
    only looked like a start and do not parse: a segment's boundaries need not be a
    message's, and the stream analysis (pcaptool/tcp/dnsstream.py) must still see it."""
    if end - off < 14:
        return None
    size = int.from_bytes(buf[off : off + 2], "big")
    if size < 12:
        return None
    payload = bytes(buf[off + 2 : min(end, off + 2 + size)])
    _qid, flags, qdcount, *_ = HEADER.unpack_from(payload, 0)
    if (flags >> 11) & 0xF not in OPCODES or flags & 0x40 or qdcount > 1:
        return None
    try:
        message(payload, rec, cut=size > len(payload), what="incomplete")
    except Truncated:
        rec.pop("dns", None)
    return None


def message(
    payload: bytes, rec: dict, cut: bool, what: str = "truncated", mdns: bool = False
) -> dict:
    """rec["dns"] from one message; `cut` says a short message was cut, not malformed.
    mDNS (RFC 6762 §10.2, §5.4) uses the class's top bit as a flag: it is masked off."""
    cls_mask = 0x7FFF if mdns else 0xFFFF
    if len(payload) < 12:
        if cut and len(payload) >= 4:  # id and flags were captured: kept, as tshark does
            d = rec["dns"] = _header(*HEADER_START.unpack_from(payload, 0), [], [])
            d[what] = True
            return d
        raise Truncated("dns", f"DNS header cut short: {len(payload)} of 12 bytes")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(payload, 0)
    questions: list[dict] = []
    answers: list[dict] = []
    d = rec["dns"] = _header(qid, flags, questions, answers)
    d["authority"] = nscount
    d["additional"] = arcount
    parser = _Wire(payload, 12)
    try:
        for _ in range(qdcount):
            q = _question(parser, cls_mask)
            if len(questions) < MAX_RRS:
                questions.append(q)
        _section(parser, ancount, answers, d, cls_mask)
        if nscount:
            _section(parser, nscount, d.setdefault("authority_records", []), d, cls_mask)
        if arcount:
            _section(parser, arcount, d.setdefault("additional_records", []), d, cls_mask)
    except _Cut:
        if not cut:
            raise Truncated("dns", "DNS message cut short: it ends before its records") from None
        d[what] = True
        d["answer_count"] = ancount
    except PARSE_ERRORS as exc:
        raise Truncated("dns", f"DNS message does not parse: {_reason(exc)}") from None
    if not d.get("additional_records", True):
        del d["additional_records"]
    return d


def _header(qid: int, flags: int, questions: list, answers: list) -> dict:
    opcode, rcode = (flags >> 11) & 0xF, flags & 0xF
    return {
        "id": qid,
        "qr": "response" if flags & 0x8000 else "query",
        "opcode": OPCODES.get(opcode, str(opcode)),
        "rcode": RCODES.get(rcode, str(rcode)),
        "flags": [f for bit, f in FLAGS if flags & bit],
        "questions": questions,
        "answers": answers,
    }


def _question(parser: _Wire, cls_mask: int) -> dict:
    name = _read_name(parser)
    qtype, qclass = parser.get_struct(QUESTION)
    return {"name": name, "type": _type(qtype), "class": _class(qclass & cls_mask)}


def _section(parser: _Wire, count: int, out: list, d: dict, cls_mask: int) -> None:
    for _ in range(count):
        name = _read_name(parser)
        rtype, rclass, ttl, rdlen = parser.get_struct(RR)
        if parser.remaining() < rdlen:
            raise _Cut
        start = parser.current
        if rtype == OPT:
            d["edns"] = _edns(parser, rclass, ttl, rdlen)
            continue
        data = _rdata(parser, rclass & cls_mask, rtype, rdlen)
        parser.seek(start + rdlen)
        if len(out) < MAX_RRS:
            out.append({"name": name, "type": _type(rtype), "ttl": ttl, "data": data})


def _rdata(parser: _Wire, rclass: int, rtype: int, rdlen: int) -> str:
    start = parser.current
    wire = parser.wire
    # Fast path for the types most answers are (dnspython's objects cost ~4x here).
    if rtype == 1 and rdlen == 4:
        return inet_ntop(AF_INET, wire[start : start + 4])
    if rtype == 28 and rdlen == 16:
        return inet_ntop(AF_INET6, wire[start : start + 16])
    if rtype in NAME_TYPES:
        with contextlib.suppress(_Cut, ValueError):
            text = _read_name(parser)
            if parser.current == start + rdlen:
                return "@" if text == "." else text
        parser.seek(start)
    dns = _dnspython()
    try:
        sub = dns.wire.Parser(wire, start)
        with sub.restrict_to(rdlen):
            # names in the data relative to the root: no final dot, as owner names (and
            # tshark) have them; the root itself is "@"
            text = dns.rdata.from_wire_parser(rclass, rtype, sub).to_text(dns.name.root)
    except PARSE_ERRORS:
        # Data that does not parse as its type: RFC 3597's generic form, losslessly.
        raw = wire[start : start + rdlen]
        text = dns.rdata.GenericRdata(rclass, rtype, raw).to_text()
    return text if len(text) <= MAX_DATA else text[:MAX_DATA] + "..."


def _edns(parser: _Wire, udp_size: int, ttl: int, rdlen: int) -> dict:
    """OPT pseudo-record (RFC 6891): payload size, version, DO bit and each option."""
    edns = {"udp_size": udp_size, "version": (ttl >> 16) & 0xFF, "do": bool(ttl & 0x8000)}
    options = []
    body = parser.get_bytes(rdlen)
    pos = 0
    while pos + 4 <= len(body) and len(options) < MAX_RRS:
        code, size = struct.unpack_from("!HH", body, pos)
        value = body[pos + 4 : pos + 4 + size]
        options.append({"code": code, "name": _option(code), "data": value.hex()})
        pos += 4 + size
    edns["options"] = options
    return edns


def _read_name(parser: _Wire) -> str:
    """A (compressed) name at the parser's position, as dnspython writes it without the
    final dot, read here because dnspython's Name objects dominate a message's cost.
    The rules are dnspython's: pointers point backwards, at most 16 of them, 255 bytes."""
    wire, pos, end = parser.wire, parser.current, parser.end
    labels: list[bytes] = []
    after = -1
    hops = size = 0
    limit = pos  # a pointer must point before the name (or the label) that holds it
    while True:
        if pos >= end:
            raise _Cut
        n = wire[pos]
        if n == 0:
            pos += 1
            break
        if n >= 0xC0:
            if pos + 1 >= end:
                raise _Cut
            target = (n & 0x3F) << 8 | wire[pos + 1]
            if target >= limit:
                raise ValueError("DNS compression pointer does not point backwards")
            hops += 1
            if hops > 16:
                raise ValueError("DNS compression pointer chain too long")
            if after < 0:
                after = pos + 2
            end = limit  # the labels reached by a pointer lie before it, as in dnspython
            pos = limit = target
            continue
        if n >= 64:
            raise ValueError(f"DNS label type 0x{n:02x} is not known")
        if pos + 1 + n > end:
            raise _Cut
        labels.append(wire[pos + 1 : pos + 1 + n])
        size += n + 1
        if size > 254:
            raise ValueError("DNS name longer than 255 bytes")
        pos += 1 + n
    parser.seek(after if after >= 0 else pos)
    if not labels:
        return "."
    if all(SAFE_LABEL.match(label) for label in labels):
        return b".".join(labels).decode("ascii")
    return _dnspython().name.Name([*labels, b""]).to_text(omit_final_dot=True)


@cache
def _type(value: int) -> str:
    return TYPE_NAMES.get(value) or _dnspython().rdatatype.to_text(value)


@cache
def _class(value: int) -> str:
    return CLASS_NAMES.get(value) or _dnspython().rdataclass.to_text(value)


def _option(code: int) -> str:
    return _dnspython().edns.OptionType.to_text(code)


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
