"""Direction-independent flow ids and Community ID v1.

Community ID: https://github.com/corelight/community-id-spec (seed 0, SHA-1, base64).
The flow id is the first 16 hex digits of the same digest, so both directions of a
connection share it, and it is short enough for a Cloud Logging label.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from socket import AF_INET, AF_INET6, inet_pton

# ICMP types that have a counterpart: the pair is treated like ports, so both directions
# hash alike. Others are one-way: port = type, port2 = code, and no ordering.
ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_PAIRS = {
    128: 129,
    129: 128,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    130: 131,
    131: 130,
    144: 145,
    145: 144,
    139: 140,
    140: 139,
}
PORTS = struct.Struct("!HH")
PROTO_PAD = struct.Struct("!BB")
SEED = b"\x00\x00"


class Flow:
    """One flow, shared by the records of both its directions."""

    __slots__ = ("id", "community_id", "fin", "closed", "texts", "shared")

    def __init__(self, flow_id: str, community_id: str) -> None:
        self.id = flow_id
        self.community_id = community_id
        self.fin = 0  # 1: FIN seen from the initiator side of the key, 2: from the other
        self.closed = False
        self.texts: tuple[str, str] | None = None  # `ends` of direction 0 and 1, once known
        # (flow, labels, operation) of its packet records after the first: the same dicts
        # for every one (Translator._flow), so nothing may change them in place
        self.shared: tuple[dict, dict, dict] | None = None

    def ends(self, side: int, src: str, sport: int, dst: str, dport: int) -> str:
        """`10.0.0.1:80 > 10.0.0.2:40000`, as messages print a packet of direction `side`
        (`pcaptool.record.envelope.direction`); made once per flow, both directions."""
        texts = self.texts
        if texts is None:
            here = f"{_endpoint(src, sport)} > {_endpoint(dst, dport)}"
            back = f"{_endpoint(dst, dport)} > {_endpoint(src, sport)}"
            texts = self.texts = (here, back) if side == 0 else (back, here)
        return texts[side]


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def community_digest(proto: int, src: str, dst: str, sport: int | None, dport: int | None) -> bytes:
    family = AF_INET6 if ":" in src else AF_INET
    s, d = inet_pton(family, src), inet_pton(family, dst)
    one_way = False
    if proto in (1, 58) and sport is not None:
        pairs = ICMP4_PAIRS if proto == 1 else ICMP6_PAIRS
        itype, code = sport, dport
        if itype in pairs:
            sport, dport = itype, pairs[itype]
        else:
            one_way = True
            sport, dport = itype, code
    if not one_way and (s > d or (s == d and sport is not None and sport > dport)):
        s, d, sport, dport = d, s, dport, sport
    data = SEED + s + d + PROTO_PAD.pack(proto, 0)
    if sport is not None:
        data += PORTS.pack(sport, dport)
    return hashlib.sha1(data).digest()


def community_id(
    proto: int, src: str, dst: str, sport: int | None = None, dport: int | None = None
) -> str:
    """Community ID v1 of a 5-tuple (ports None for protocols without them)."""
    return "1:" + base64.b64encode(community_digest(proto, src, dst, sport, dport)).decode()


class FlowTable:
    """Flow objects by directional 5-tuple, both directions pointing at one Flow.

    Bounded: past `limit` keys the oldest quarter is dropped (a later packet of such a flow
    gets a fresh Flow with the same ids; only `first` can then repeat).
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        # (proto, src, sport, dst, dport) -> Flow, both directions: a caller on a hot path
        # may look a known flow up here itself; `get` makes new ones
        self.by_key: dict[tuple, Flow] = {}

    def get(
        self, proto: int, src: str, dst: str, sport: int | None, dport: int | None
    ) -> tuple[Flow, bool]:
        key = (proto, src, sport, dst, dport)
        flow = self.by_key.get(key)
        if flow is not None:
            return flow, False
        digest = community_digest(proto, src, dst, sport, dport)
        flow = Flow(digest[:8].hex(), "1:" + base64.b64encode(digest).decode())
        flows = self.by_key
        if len(flows) >= self.limit:
            for old in list(flows)[: self.limit // 4]:
                del flows[old]
        flows[key] = flow
        flows[(proto, dst, dport, src, sport)] = flow
        return flow, True

    def __len__(self) -> int:
        return len(self.by_key)
