"""Packets to Cloud Logging records: one JSON-ready dict per packet.

The keys are fixed and documented in docs/schema.md (and validated against
pcaptool/schema/record.schema.json). Cloud Logging reads `timestamp`, `severity`,
`message`, `logging.googleapis.com/labels` and `logging.googleapis.com/operation` from a
structured log line: https://cloud.google.com/logging/docs/structured-logging
"""

from __future__ import annotations

import time
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
from pcaptool.record.flow import Flow, FlowTable

LABELS = "logging.googleapis.com/labels"
OPERATION = "logging.googleapis.com/operation"
PRODUCER = "github.com/pcaptool"


class Analyzer(Protocol):
    """Application-layer analysis fed by the translator (HTTP, HTTP/2, connection records).

    `on_tcp` is called for every TCP packet after its layers are decoded; it may add keys
    to `rec`, and return a short text for the end of the record's `message` (or None).
    Records it wants emitted on their own (connection summaries) are returned by
    `take_records()` after each packet and by `finish()` at the end of the input.
    """

    def on_tcp(
        self,
        rec: dict,
        flow: Flow,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        seg: dict,
        payload: bytes,
        ts_ns: int,
    ) -> str | None: ...

    def take_records(self) -> list[dict]: ...

    def finish(self) -> list[dict]: ...


class Translator:
    """Turns the packets of one input into records. Keeps per-flow state across packets."""

    def __init__(self, input_name: str = "-", analyzer: Analyzer | None = None) -> None:
        self.input_name = input_name
        self.analyzer = analyzer
        self.flows = FlowTable()
        self._second = -1
        self._second_str = ""

    def date(self, ts_ns: int) -> tuple[int, int, str]:
        sec, nanos = divmod(ts_ns, 1_000_000_000)
        if sec != self._second:
            self._second = sec
            self._second_str = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return sec, nanos, f"{self._second_str}.{nanos:09d}Z"

    def translate(self, num: int, pkt: Packet, iface_name: str | None = None) -> dict:
        """The record of packet `num` (1-based in its input)."""
        sec, nanos, date = self.date(pkt.ts_ns)
        rec: dict = {
            "timestamp": {"seconds": sec, "nanos": nanos},
            "severity": "DEFAULT",
            "message": "",
            "pcap": {
                "num": num,
                "date": date,
                "file": self.input_name,
                "iface": {"index": pkt.iface, "name": iface_name},
                "linktype": LINKTYPE_NAMES.get(pkt.linktype, str(pkt.linktype)),
                "len": pkt.wirelen,
                "caplen": pkt.caplen,
                "truncated": pkt.caplen < pkt.wirelen,
            },
        }
        prefix = f"#{num} {iface_name} " if iface_name else f"#{num} "
        try:
            rec["message"] = prefix + self._layers(pkt, rec)
        except Truncated as exc:
            rec["severity"] = "ERROR"
            rec["error"] = {"layer": exc.layer, "reason": exc.reason}
            rec["message"] = f"{prefix}ERROR {exc.layer}: {exc.reason}"
        return rec

    def _layers(self, pkt: Packet, rec: dict) -> str:
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
            seg = tcp(buf, off, end, rec)
            sport, dport = seg["sport"], seg["dport"]
            flow = self._flow(rec, 6, src, dst, sport, dport)
            bits = seg["flags_str"]
            if "R" in bits:
                flow.closed = True
                rec[OPERATION]["last"] = True
            elif "F" in bits:
                side = 1 if (src, sport) < (dst, dport) else 2
                flow.fin |= side
                if flow.fin == 3:
                    flow.closed = True
                    rec[OPERATION]["last"] = True
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
                    rec, flow, src, sport, dst, dport, seg, payload, pkt.ts_ns
                )
            msg = (
                f"{what} {_ep(src, sport)} > {_ep(dst, dport)} [{bits}] "
                f"seq={seg['seq']} ack={seg['ack']} win={seg['window']} len={seg['len']}"
            )
            if note:
                msg += " " + note
            elif what == "DNS":
                msg += " " + _dns_message(rec["dns"])
            elif what == "TLS":
                msg += " " + _tls_message(rec["tls"])
            return msg
        if proto == 17:
            u = udp(buf, off, end, rec)
            sport, dport = u["sport"], u["dport"]
            self._flow(rec, 17, src, dst, sport, dport)
            if (sport in DNS_PORTS or dport in DNS_PORTS) and u["len"]:
                payload = buf[off + 8 : end]
                if _try(dns, payload, rec, False):
                    return f"DNS {_ep(src, sport)} > {_ep(dst, dport)} {_dns_message(rec['dns'])}"
            return f"UDP {_ep(src, sport)} > {_ep(dst, dport)} len={u['len']}"
        if proto == 1 or proto == 58:
            icmp = (icmpv4 if proto == 1 else icmpv6)(buf, off, end, rec)
            self._flow(rec, proto, src, dst, icmp["type"], icmp["code"])
            return f"{'ICMP' if proto == 1 else 'ICMPv6'} {src} > {dst} {_icmp_message(icmp)}"
        self._flow(rec, proto, src, dst, None, None)
        return f"IPv{rec['ip']['version']} {src} > {dst} proto={proto} ({PROTO_NAMES.get(proto, '?')}) len={end - off}"

    def _flow(
        self, rec: dict, proto: int, src: str, dst: str, sport: int | None, dport: int | None
    ) -> Flow:
        flow, first = self.flows.get(proto, src, dst, sport, dport)
        flow.packets += 1
        rec["flow"] = {"id": flow.id, "community_id": flow.community_id}
        rec[LABELS] = {"flow": flow.id, "proto": PROTO_NAMES.get(proto, str(proto))}
        op = {"id": flow.id, "producer": PRODUCER}
        if first:
            op["first"] = True
        rec[OPERATION] = op
        return flow

    def records(self, reader: Iterable[Packet]) -> Iterator[dict]:
        """Records for every packet of `reader`, then whatever the analyzer still holds."""
        names = _iface_names(reader)
        analyzer = self.analyzer
        num = 0
        for pkt in reader:
            if type(pkt) is not Packet:  # a run of packets shed by a bounded backlog
                num = pkt.last
                yield pkt.record(self)
                continue
            num += 1
            yield self.translate(num, pkt, names(pkt.iface))
            if analyzer is not None:
                yield from analyzer.take_records()
        if analyzer is not None:
            yield from analyzer.finish()


def _iface_names(reader):
    if isinstance(reader, CaptureReader) or hasattr(reader, "interfaces"):

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


def _ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


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
