"""Packets to Cloud Logging records: one JSON-ready dict per packet.

The keys are fixed and documented in docs/schema.md (and validated against
pcaptool/schema/record.schema.json). Cloud Logging reads `timestamp`, `severity`,
`message`, `logging.googleapis.com/labels` and `logging.googleapis.com/operation` from a
structured log line: https://cloud.google.com/logging/docs/structured-logging
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Protocol

from pcaptool.capfile.reader import LINKTYPE_NAMES, CaptureReader, Packet
from pcaptool.decode import Truncated
from pcaptool.decode.arp import arp
from pcaptool.decode.dns import DNS_PORTS, dns
from pcaptool.decode.icmp import icmpv4, icmpv6
from pcaptool.decode.ip import PROTO_NAMES, ipv4, ipv6
from pcaptool.decode.link import DECODERS, ETH_ARP, ETH_IPV4, ETH_IPV6, ETH_RARP
from pcaptool.decode.tcp import tcp
from pcaptool.decode.tls import looks_like_tls, tls
from pcaptool.decode.udp import udp
from pcaptool.record.envelope import (
    RUN_ID_ENV,
    Clock,
    direction,
    endpoint,
    finish_labels,
    mark_last,
    message_prefix,
    packet_record,
    set_error,
    set_flow,
)
from pcaptool.record.flow import Flow, FlowTable
from pcaptool.tcp.stream import Segment


class Analyzer(Protocol):
    """Application-layer analysis fed by the translator (HTTP, HTTP/2, connection records).

    `on_tcp` is called for every TCP packet after its layers are decoded, with the flow,
    the packet's direction (0 or 1, `pcaptool.record.envelope.direction`) and the segment
    (header values and payload); it may add keys to `rec`, and returns a short text for
    the end of the record's `message` (or None). Records it wants emitted on their own
    (connection summaries) are returned by `take_records()` after each packet and by
    `finish()` at the end of the input.
    """

    def on_tcp(self, rec: dict, flow: Flow, direction: int, seg: Segment) -> str | None: ...

    def take_records(self) -> list[dict]: ...

    def finish(self) -> list[dict]: ...


class Translator:
    """Turns the packets of one input into records. Keeps per-flow state across packets."""

    def __init__(
        self, input_name: str = "-", analyzer: Analyzer | None = None, run_id: str | None = None
    ) -> None:
        # the run id: given, or PCAP_RUN_ID (set by `pcaptool translate`, seen by its workers)
        self.run_id = run_id or os.environ.get(RUN_ID_ENV) or None
        self.input_name = input_name
        self.analyzer = analyzer
        self.flows = FlowTable()
        self.clock = Clock()

    def translate(self, num: int, pkt: Packet, iface_name: str | None = None) -> dict:
        """The record of packet `num` (1-based in its input)."""
        rec = packet_record(
            self.clock,
            pkt.ts_ns,
            {
                "num": num,
                "date": "",
                "file": self.input_name,
                "iface": {"index": pkt.iface, "name": iface_name},
                "linktype": LINKTYPE_NAMES.get(pkt.linktype, str(pkt.linktype)),
                "len": pkt.wirelen,
                "caplen": pkt.caplen,
                "truncated": pkt.caplen < pkt.wirelen,
            },
        )
        prefix = message_prefix(num, iface_name)
        try:
            rec["message"] = prefix + self._layers(num, pkt, rec)
        except Truncated as exc:
            set_error(rec, prefix, exc.layer, exc.reason)
        finish_labels(rec, self.run_id)
        return rec

    def _layers(self, num: int, pkt: Packet, rec: dict) -> str:
        buf = pkt.data
        decode_link = DECODERS.get(pkt.linktype)
        if decode_link is None:
            raise Truncated("l2", f"link type {pkt.linktype} is not decoded")
        etype, off = decode_link(buf, rec)
        end = len(buf)
        if etype == ETH_IPV4:
            proto, off, end, src, dst, later_fragment = ipv4(buf, off, end, rec)
        elif etype == ETH_IPV6:
            proto, off, end, src, dst, later_fragment = ipv6(buf, off, end, rec)
        elif etype in (ETH_ARP, ETH_RARP):
            a = arp(buf, off, end, rec)
            return _arp_message(a)
        else:
            return f"ethertype 0x{etype:04x} len={pkt.wirelen}"

        if later_fragment:
            self._flow(rec, proto, src, dst, None, None)
            return f"IPv{rec['ip']['version']} {src} > {dst} fragment offset={rec['ip']['frag_offset']} proto={proto}"
        if proto == 6:
            return self._tcp(num, pkt, rec, off, end, src, dst)
        if proto == 17:
            u = udp(buf, off, end, rec)
            sport, dport = u["sport"], u["dport"]
            self._flow(rec, 17, src, dst, sport, dport)
            if (sport in DNS_PORTS or dport in DNS_PORTS) and u["len"]:
                payload = buf[off + 8 : end]
                if _try(dns, payload, rec, False):
                    return f"DNS {endpoint(src, sport)} > {endpoint(dst, dport)} {_dns_message(rec['dns'])}"
            return f"UDP {endpoint(src, sport)} > {endpoint(dst, dport)} len={u['len']}"
        if proto == 1 or proto == 58:
            icmp = (icmpv4 if proto == 1 else icmpv6)(buf, off, end, rec)
            self._flow(rec, proto, src, dst, icmp["type"], icmp["code"])
            return f"{'ICMP' if proto == 1 else 'ICMPv6'} {src} > {dst} {_icmp_message(icmp)}"
        self._flow(rec, proto, src, dst, None, None)
        return f"IPv{rec['ip']['version']} {src} > {dst} proto={proto} ({PROTO_NAMES.get(proto, '?')}) len={end - off}"

    def _tcp(self, num: int, pkt: Packet, rec: dict, off: int, end: int, src, dst) -> str:
        buf = pkt.data
        seg = tcp(buf, off, end, rec)
        sport, dport = seg["sport"], seg["dport"]
        flow = self._flow(rec, 6, src, dst, sport, dport)
        flags = buf[off + 13]  # the header's flag bits (RFC 9293 section 3.1)
        side = direction(src, sport, dst, dport)
        if flags & 0x04:  # RST
            flow.closed = True
            mark_last(rec)
        elif flags & 0x01:  # FIN
            flow.fin |= 1 << side
            if flow.fin == 3:
                flow.closed = True
                mark_last(rec)
        payload = buf[off + seg["hdr_len"] : end] if seg["len"] else b""
        what = "TCP"
        if payload:
            if (sport in DNS_PORTS or dport in DNS_PORTS) and _try(dns, payload, rec, True):
                what = "DNS"
            elif looks_like_tls(payload):
                tls(payload, rec)
                what = "TLS"
        note = None
        if self.analyzer is not None:
            note = self.analyzer.on_tcp(
                rec, flow, side, self._segment(pkt, rec, src, dst, seg, flags, payload, num)
            )
        msg = (
            f"{what} {endpoint(src, sport)} > {endpoint(dst, dport)} [{seg['flags_str']}] "
            f"seq={seg['seq']} ack={seg['ack']} win={seg['window']} len={seg['len']}"
        )
        if note:
            msg += " " + note
        elif what == "DNS":
            msg += " " + _dns_message(rec["dns"])
        elif what == "TLS":
            msg += " " + _tls_message(rec["tls"])
        return msg

    @staticmethod
    def _segment(pkt: Packet, rec: dict, src, dst, seg: dict, flags, payload, num) -> Segment:
        missing = 0
        if pkt.caplen < pkt.wirelen:
            # the snaplen cut the payload: the IP length says how much is missing
            ip = rec["ip"]
            real = ip["len"] - ip.get("hdr_len", 40) - seg["hdr_len"]
            missing = max(real - len(payload), 0)
        return Segment(
            src, seg["sport"], dst, seg["dport"], seg["seq"], seg["ack"], flags,
            payload, pkt.ts_ns, num, seg["window"], missing,
        )  # fmt: skip

    def _flow(
        self, rec: dict, proto: int, src: str, dst: str, sport: int | None, dport: int | None
    ) -> Flow:
        flow, first = self.flows.get(proto, src, dst, sport, dport)
        flow.packets += 1
        set_flow(rec, flow, PROTO_NAMES.get(proto, str(proto)), first)
        return flow

    def records(self, reader: Iterable[Packet]) -> Iterator[dict]:
        """Records for every packet of `reader`, then whatever the analyzer still holds."""
        names = _iface_names(reader)
        analyzer = self.analyzer
        for num, pkt in enumerate(reader, 1):
            yield self.translate(num, pkt, names(pkt.iface))
            if analyzer is not None:
                yield from analyzer.take_records()
        if analyzer is not None:
            yield from analyzer.finish()


def _iface_names(reader):
    if isinstance(reader, CaptureReader):

        def names(index: int) -> str | None:
            ifaces = reader.interfaces
            return ifaces[index].name if index < len(ifaces) else None

        return names
    return lambda index: None


def _try(decoder, payload: bytes, rec: dict, over_tcp: bool) -> bool:
    try:
        decoder(payload, rec, over_tcp)
        return True
    except Truncated:
        return False


def _arp_message(a: dict) -> str:
    if "sender_ip" not in a:
        return f"ARP {a['op_name']}"
    if a["op"] in (1, 3, 8):
        return f"ARP {a['op_name']} who-has {a['target_ip']} tell {a['sender_ip']}"
    return f"ARP {a['op_name']} {a['sender_ip']} is-at {a['sender_mac']}"


def _icmp_message(icmp: dict) -> str:
    parts = [icmp["name"]]
    if "id" in icmp:
        parts.append(f"id={icmp['id']} seq={icmp['seq']}")
    if "gateway" in icmp:
        parts.append(f"gateway={icmp['gateway']}")
    if "target" in icmp:
        parts.append(f"target={icmp['target']}")
    orig = icmp.get("orig")
    if orig:
        ports = f" {orig['sport']} > {orig['dport']}" if "sport" in orig else ""
        parts.append(
            f"for {PROTO_NAMES.get(orig['proto'], orig['proto'])} {orig['src']} > {orig['dst']}{ports}"
        )
    return " ".join(parts)


def _dns_message(d: dict) -> str:
    q = d["questions"][0] if d["questions"] else None
    qtext = f"{q['type']} {q['name']}" if q else "(no question)"
    if d["qr"] == "query":
        return f"query {qtext}"
    answers = ", ".join(a["data"] for a in d["answers"][:4])
    return f"response {d['rcode']} {qtext}" + (f" -> {answers}" if answers else "")


def _tls_message(t: dict) -> str:
    parts = [t.get("handshake") or "+".join(r["type"] for r in t["records"][:3])]
    if "sni" in t:
        parts.append(f"sni={t['sni']}")
    if "alpn" in t:
        parts.append("alpn=" + ",".join(t["alpn"]))
    return " ".join(parts)
