"""IPv4 and IPv6 fragment reassembly (RFC 791 section 3.2, RFC 8200 section 4.5), as tshark.

tshark's defaults (`ip.defragment`, `ipv6.defragment`: true) are followed: a fragment
whose bytes were all captured is held; the packet that completes its datagram has the
reassembled payload decoded (TCP, UDP, DNS, a tunnel...), the others are only
fragments. A datagram is keyed by its addresses and identification (IPv4: and protocol),
as Wireshark keys it. Overlaps follow Wireshark's reassemble.c: the first tail (MF clear)
fixes the length, and each byte comes from the fragment with the lowest offset that
covers it, the first to arrive of equal offsets (a later copy adds only bytes not yet
held); bytes past the length are dropped.

Bounds (tshark has none): a datagram's payload ends at 65,535 bytes (a fragment past
that is refused, `ip.fragment.error`); a datagram unfinished 60 s of capture time after
its first fragment, or the oldest when more than `max_pending` datagrams or
`max_bytes` bytes are held, is dropped and counted (`ip.fragment.evicted` on the record
of the packet that dropped it, `Reassembler.expired`/`.evicted` overall). Memory per
datagram: its payload image (at most 65,535 bytes), one small entry per distinct stretch
of it and one per fragment, at most `MAX_PIECES` of each (more: the datagram is dropped).
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import OrderedDict

from pcaptool.decode import IP_PROTO, Truncated, need
from pcaptool.decode.ip import EXT_NAMES
from pcaptool.decode.table import walk_on

MAX_PAYLOAD = 65535
MAX_PIECES = 8192  # 65,535 bytes in fragments of 8
TIMEOUT_NS = 60_000_000_000  # RFC 8200's 60 s (Linux: ip6frag_time 60, ipfrag_time 30)
MAX_PENDING = 4096
MAX_BYTES = 16 << 20
EXT_HDR = struct.Struct("!BB")


class _Datagram:
    """One datagram being reassembled: its payload image and who wrote each stretch."""

    __slots__ = ("first_num", "first_ts", "image", "pieces", "length", "frames", "flags", "reach")

    def __init__(self, num: int, ts: int) -> None:
        self.first_num = num
        self.first_ts = ts
        self.image = bytearray()
        self.pieces: list[list[int]] = []  # [start, end, offset of the fragment], sorted
        self.length = -1  # fixed by the first fragment with MF clear
        self.frames: list[tuple[int, int, int]] = []  # (offset, arrival, frame)
        self.flags = 0  # 1: fragments overlap, 2: overlapping bytes differ
        self.reach = 0  # the bytes from 0 held without a hole

    def add(self, offset: int, data, num: int) -> None:
        end = offset + len(data)
        image = self.image
        if end > len(image):
            image.extend(bytes(end - len(image)))
        self.frames.append((offset, len(self.frames), num))
        pieces = self.pieces
        # the pieces that overlap [offset, end): from the last one starting before offset
        i = j = max(bisect_left(pieces, [offset]) - 1, 0)
        while j < len(pieces) and pieces[j][0] < end:
            j += 1
        out, pos = [], offset
        for p in pieces[i:j]:
            s, e, owner = p
            if e <= offset:
                out.append(p)
                continue
            self.flags |= 1
            if s > pos:  # a hole the new fragment fills
                out.append([pos, s, offset])
                image[pos:s] = data[pos - offset : s - offset]
            lo, hi = max(s, offset), min(e, end)
            if image[lo:hi] != data[lo - offset : hi - offset]:
                self.flags |= 2
            if owner <= offset:  # a lower offset keeps its bytes, an earlier copy too
                out.append(p)
            else:  # the new fragment wins [lo, hi): what of p lies outside stays p's
                if s < lo:
                    out.append([s, lo, owner])
                out.append([lo, hi, offset])
                image[lo:hi] = data[lo - offset : hi - offset]
                if hi < e:
                    out.append([hi, e, owner])
            pos = max(pos, e)
        if pos < end:
            out.append([pos, end, offset])
            image[pos:end] = data[pos - offset :]
        pieces[i:j] = out
        if offset <= self.reach:  # contiguous bytes from 0 only grow
            k = max(bisect_left(pieces, [self.reach]) - 1, 0)
            while k < len(pieces) and pieces[k][0] <= self.reach:
                self.reach = max(self.reach, pieces[k][1])
                k += 1

    def whole(self) -> bool:
        return 0 <= self.length <= self.reach

    def cost(self) -> int:
        return len(self.image) + 64 * (len(self.pieces) + len(self.frames))


class Reassembler:
    """The datagrams being reassembled in one translation, oldest first."""

    def __init__(self, max_pending: int = MAX_PENDING, max_bytes: int = MAX_BYTES) -> None:
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.pending: OrderedDict[tuple, _Datagram] = OrderedDict()
        self.bytes = 0
        self.reassembled = 0
        self.expired = 0
        self.evicted = 0

    def add(self, num: int, pkt, rec: dict, proto: int, off: int, end: int):
        """Hold the fragment at `pkt.data[off:end]` (its IP header is `rec["ip"]`); return
        (packet, and `walk`'s answer): on the packet that completes the datagram, the
        packet with the payload as its data and the walk through it; else `ip`'s."""
        ip = rec["ip"]
        note = ip["fragment"] = {}
        dropped = self._expire(pkt.ts_ns)
        offset = ip["frag_offset"]
        if offset + end - off > MAX_PAYLOAD:
            note["error"] = f"fragment ends past {MAX_PAYLOAD} bytes: not reassembled"
            return pkt, ("ip", None, None, off, end)
        if ip["version"] == 4:
            key = (4, ip["src"], ip["dst"], ip["id"], proto)
        else:
            key = (6, ip["src"], ip["dst"], ip["id"])
        dgram = self.pending.get(key)
        if dgram is None:
            dgram = self.pending[key] = _Datagram(num, pkt.ts_ns)
        else:
            self.bytes -= dgram.cost()
        note["datagram"] = dgram.first_num
        if "MF" not in ip["flags"] and dgram.length < 0:
            dgram.length = offset + end - off
        dgram.add(offset, memoryview(pkt.data)[off:end], num)
        if dgram.whole():
            del self.pending[key]
            self.reassembled += 1
            return self._done(pkt, rec, note, dgram, proto, dropped)
        if len(dgram.pieces) > MAX_PIECES or len(dgram.frames) > MAX_PIECES:
            del self.pending[key]
            dropped += 1
            self.evicted += 1
        else:
            self.bytes += dgram.cost()
            dropped += self._evict(key)
        if dropped:
            note["evicted"] = dropped
        return pkt, ("ip", None, None, off, end)

    def _done(self, pkt, rec: dict, note: dict, dgram: _Datagram, proto: int, dropped: int):
        payload = bytes(dgram.image[: dgram.length])
        note["frames"] = [n for _, _, n in sorted(dgram.frames)]
        note["len"] = dgram.length
        if dgram.flags & 1:
            note["overlap"] = True
        if dgram.flags & 2:
            note["conflict"] = True
        if dropped:
            note["evicted"] = dropped
        size = len(payload)
        pkt = pkt._replace(data=payload, caplen=size, wirelen=size)
        off = 0
        ip = rec["ip"]
        if ip["version"] == 6:  # extension headers after the Fragment header
            off, proto = _ipv6_ext(payload, proto, ip)
        row = IP_PROTO.get(proto)
        if row is None:
            return pkt, ("ip", IP_PROTO, proto, off, size)
        return pkt, walk_on(payload, row, off, size, rec)

    def _expire(self, now: int) -> int:
        n = 0
        pending = self.pending
        while pending:
            key, dgram = next(iter(pending.items()))
            if now - dgram.first_ts <= TIMEOUT_NS:
                break
            del pending[key]
            self.bytes -= dgram.cost()
            n += 1
        self.expired += n
        return n

    def _evict(self, keep: tuple) -> int:
        n = 0
        pending = self.pending
        while len(pending) > self.max_pending or self.bytes > self.max_bytes:
            key, dgram = next(iter(pending.items()))
            if key == keep:
                if len(pending) == 1:
                    break
                pending.move_to_end(key)
                continue
            del pending[key]
            self.bytes -= dgram.cost()
            n += 1
        self.evicted += n
        return n


def _ipv6_ext(buf: bytes, nxt: int, ip: dict) -> tuple[int, int]:
    """Walk the extension headers that follow the Fragment header in the payload."""
    off = 0
    ext = ip.setdefault("ext", [])
    end = len(buf)
    while nxt in EXT_NAMES and nxt != 44:
        name = EXT_NAMES[nxt]
        need("ip", "IPv6 extension header", off, 8, end)
        following, hlen = EXT_HDR.unpack_from(buf, off)
        size = (hlen + 2) * 4 if nxt == 51 else (hlen + 1) * 8
        need("ip", f"IPv6 {name} header", off, size, end)
        ext.append(name)
        off += size
        nxt = following
    if nxt == 44:
        raise Truncated("ip", "IPv6 Fragment header inside a reassembled datagram")
    ip["proto"] = nxt
    return off, nxt
