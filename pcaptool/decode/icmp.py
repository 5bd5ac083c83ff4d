"""ICMPv4 (RFC 792) and ICMPv6 (RFC 4443, neighbor discovery RFC 4861).

Names read like "EchoRequest" or "DestinationUnreachable(Port)". Errors carry the
original header they quote under "orig"; echo carries id/seq; redirects carry their
gateway/target; neighbor discovery its target and options.
"""

from __future__ import annotations

import struct

from pcaptool.decode import Step, need
from pcaptool.decode.ip import inner_ip, ipv4_addr, ipv6_addr

ECHO = struct.Struct("!HH")

V4_TYPES = {
    0: "EchoReply",
    3: "DestinationUnreachable",
    4: "SourceQuench",
    5: "Redirect",
    8: "EchoRequest",
    9: "RouterAdvertisement",
    10: "RouterSolicitation",
    11: "TimeExceeded",
    12: "ParameterProblem",
    13: "Timestamp",
    14: "TimestampReply",
    15: "InformationRequest",
    16: "InformationReply",
    17: "AddressMaskRequest",
    18: "AddressMaskReply",
}
V4_CODES = {
    3: (
        "Net",
        "Host",
        "Protocol",
        "Port",
        "FragmentationNeeded",
        "SourceRouteFailed",
        "NetUnknown",
        "HostUnknown",
        "SourceHostIsolated",
        "NetProhibited",
        "HostProhibited",
        "NetTOS",
        "HostTOS",
        "CommunicationProhibited",
        "HostPrecedenceViolation",
        "PrecedenceCutoff",
    ),
    5: ("Net", "Host", "TOSNet", "TOSHost"),
    11: ("TTL", "FragmentReassembly"),
    12: ("Pointer", "MissingOption", "BadLength"),
}
V4_ERRORS = frozenset((3, 4, 5, 11, 12))

V6_TYPES = {
    1: "DestinationUnreachable",
    2: "PacketTooBig",
    3: "TimeExceeded",
    4: "ParameterProblem",
    128: "EchoRequest",
    129: "EchoReply",
    130: "MLDQuery",
    131: "MLDReport",
    132: "MLDDone",
    133: "RouterSolicitation",
    134: "RouterAdvertisement",
    135: "NeighborSolicitation",
    136: "NeighborAdvertisement",
    137: "Redirect",
    143: "MLDv2Report",
}
V6_CODES = {
    1: (
        "NoRoute",
        "AdminProhibited",
        "BeyondScope",
        "Address",
        "Port",
        "SourcePolicy",
        "RejectRoute",
    ),
    3: ("HopLimit", "FragmentReassembly"),
    4: ("HeaderField", "NextHeader", "Option"),
}
V6_ERRORS = frozenset((1, 2, 3, 4))
ND_OPTIONS = {1: "source_lladdr", 2: "target_lladdr", 3: "prefix", 4: "redirected", 5: "mtu"}


def name(version: int, itype: int, code: int) -> str:
    types, codes = (V4_TYPES, V4_CODES) if version == 4 else (V6_TYPES, V6_CODES)
    base = types.get(itype, f"Type{itype}")
    if itype in codes:
        names = codes[itype]
        return f"{base}({names[code] if code < len(names) else code})"
    return base


def icmpv4(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    icmp = _header(4, buf, off, end, rec)
    itype, code = icmp["type"], icmp["code"]
    if itype in (0, 8, 13, 14, 15, 16, 17, 18):
        icmp["id"], icmp["seq"] = ECHO.unpack_from(buf, off + 4)
    elif itype in V4_ERRORS:
        if itype == 5:
            icmp["gateway"] = ipv4_addr(buf[off + 4 : off + 8])
        elif itype == 3 and code == 4:
            icmp["mtu"] = struct.unpack_from("!H", buf, off + 6)[0]
        orig = inner_ip(buf, off + 8, end)
        if orig is not None:
            icmp["orig"] = orig
    return None


def icmpv6(buf: bytes, off: int, end: int, rec: dict) -> Step | None:
    icmp = _header(6, buf, off, end, rec)
    itype = icmp["type"]
    if itype in (128, 129):
        icmp["id"], icmp["seq"] = ECHO.unpack_from(buf, off + 4)
    elif itype in V6_ERRORS:
        if itype == 2:
            icmp["mtu"] = struct.unpack_from("!I", buf, off + 4)[0]
        orig = inner_ip(buf, off + 8, end)
        if orig is not None:
            icmp["orig"] = orig
    elif itype in (135, 136) and off + 24 <= end:
        icmp["target"] = ipv6_addr(buf[off + 8 : off + 24])
        if itype == 136:
            flags = buf[off + 4]
            icmp["flags"] = [f for bit, f in ((0x80, "R"), (0x40, "S"), (0x20, "O")) if flags & bit]
        icmp["options"] = _nd_options(buf, off + 24, end)
    elif itype == 137 and off + 40 <= end:
        icmp["target"] = ipv6_addr(buf[off + 8 : off + 24])
        icmp["destination"] = ipv6_addr(buf[off + 24 : off + 40])
        icmp["options"] = _nd_options(buf, off + 40, end)
    elif itype == 134 and off + 16 <= end:
        icmp["hop_limit"] = buf[off + 4]
        icmp["flags"] = [f for bit, f in ((0x80, "M"), (0x40, "O")) if buf[off + 5] & bit]
        icmp["router_lifetime"] = struct.unpack_from("!H", buf, off + 6)[0]
        icmp["options"] = _nd_options(buf, off + 16, end)
    elif itype == 133:
        icmp["options"] = _nd_options(buf, off + 8, end)
    return None


def _header(version: int, buf: bytes, off: int, end: int, rec: dict) -> dict:
    """rec["icmp"] with type, code and name; cut short of 8 bytes, those that fit are kept
    (tshark gives type and code from 2 bytes) and Truncated is raised."""
    if off + 2 <= end:
        itype, code = buf[off], buf[off + 1]
        icmp = rec["icmp"] = {
            "version": version,
            "type": itype,
            "code": code,
            "name": name(version, itype, code),
        }
    need("icmp", "ICMP header" if version == 4 else "ICMPv6 header", off, 8, end)
    return icmp


def _nd_options(buf: bytes, off: int, end: int) -> list[dict]:
    options = []
    while off + 2 <= end:
        otype, olen = buf[off], buf[off + 1] * 8
        if olen == 0 or off + olen > end:
            break
        body = buf[off + 2 : off + olen]
        opt: dict = {"type": ND_OPTIONS.get(otype, str(otype))}
        if otype in (1, 2):
            opt["value"] = body[:6].hex(":")
        elif otype == 3 and len(body) >= 30:
            opt["value"] = f"{ipv6_addr(body[14:30])}/{body[0]}"
        elif otype == 5 and len(body) >= 6:
            opt["value"] = struct.unpack_from("!I", body, 2)[0]
        options.append(opt)
        off += olen
    return options
