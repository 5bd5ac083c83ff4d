"""DNS messages (RFC 1035) over UDP, or over TCP with the 2-byte length prefix.

Parsing is dpkt's; this module only turns its objects into JSON-ready dicts.
"""

from __future__ import annotations

import struct
from socket import AF_INET6, inet_ntop

import dpkt

from pcaptool.decode import Truncated
from pcaptool.decode.ip import ipv4_addr

DNS_PORTS = frozenset((53, 5353, 5355))
HEADER = struct.Struct("!HHHHHH")

TYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    13: "HINFO",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    39: "DNAME",
    41: "OPT",
    43: "DS",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    99: "SPF",
    255: "ANY",
    257: "CAA",
}
CLASSES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
OPCODES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE"}
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


def dns(payload: bytes, rec: dict, over_tcp: bool = False) -> dict:
    if over_tcp:
        if len(payload) < 14:
            raise Truncated("dns", "DNS over TCP message cut short")
        payload = payload[2 : 2 + int.from_bytes(payload[:2], "big")]
    try:
        msg = dpkt.dns.DNS(payload)
    except (dpkt.UnpackError, IndexError, ValueError, UnicodeDecodeError) as exc:
        if len(payload) < 12:
            raise Truncated(
                "dns", f"DNS message does not parse: {exc or type(exc).__name__}"
            ) from None
        return _partial(payload, rec)
    flags = [
        f
        for f, on in (("aa", msg.aa), ("tc", getattr(msg, "tc", 0)), ("rd", msg.rd), ("ra", msg.ra))
        if on
    ]
    d = {
        "id": msg.id,
        "qr": "response" if msg.qr else "query",
        "opcode": OPCODES.get(msg.opcode, str(msg.opcode)),
        "rcode": RCODES.get(msg.rcode, str(msg.rcode)),
        "flags": flags,
        "questions": [
            {
                "name": q.name,
                "type": TYPES.get(q.type, str(q.type)),
                "class": CLASSES.get(q.cls, str(q.cls)),
            }
            for q in msg.qd
        ],
        "answers": [_rr(rr) for rr in msg.an],
        "authority": len(msg.ns),
        "additional": len(msg.ar),
    }
    rec["dns"] = d
    return d


def _rr(rr) -> dict:
    return {
        "name": rr.name,
        "type": TYPES.get(rr.type, str(rr.type)),
        "ttl": rr.ttl,
        "data": _rdata(rr),
    }


def _rdata(rr) -> str:
    t = rr.type
    try:
        if t == 1 and len(rr.rdata) == 4:
            return ipv4_addr(rr.rdata)
        if t == 28 and len(rr.rdata) == 16:
            return inet_ntop(AF_INET6, rr.rdata)
        if t == 5:
            return rr.cname
        if t == 2:
            return rr.nsname
        if t == 12:
            return rr.ptrname
        if t == 15:
            return f"{rr.preference} {rr.mxname}"
        if t in (16, 99):
            return " ".join(
                s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in rr.text
            )
        if t == 33:
            return f"{rr.priority} {rr.weight} {rr.port} {rr.srvname}"
        if t == 6:
            return f"{rr.mname} {rr.rname} {rr.serial} {rr.refresh} {rr.retry} {rr.expire} {rr.minimum}"
    except AttributeError:
        pass
    return rr.rdata.hex()


def _partial(payload: bytes, rec: dict) -> dict:
    """A message cut short (snap length): the header and whatever questions fit."""
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(payload, 0)
    questions = []
    off = 12
    for _ in range(qdcount):
        try:
            name, off = dpkt.dns.unpack_name(payload, off)
            qtype, qclass = struct.unpack_from("!HH", payload, off)
        except (dpkt.UnpackError, IndexError, struct.error, UnicodeDecodeError):
            break
        off += 4
        questions.append(
            {
                "name": name,
                "type": TYPES.get(qtype, str(qtype)),
                "class": CLASSES.get(qclass, str(qclass)),
            }
        )
    opcode, rcode = (flags >> 11) & 0xF, flags & 0xF
    d = {
        "id": qid,
        "qr": "response" if flags & 0x8000 else "query",
        "opcode": OPCODES.get(opcode, str(opcode)),
        "rcode": RCODES.get(rcode, str(rcode)),
        "flags": [
            f
            for bit, f in ((0x400, "aa"), (0x200, "tc"), (0x100, "rd"), (0x80, "ra"))
            if flags & bit
        ],
        "questions": questions,
        "answers": [],
        "authority": nscount,
        "additional": arcount,
        "truncated": True,
        "answer_count": ancount,
    }
    rec["dns"] = d
    return d
