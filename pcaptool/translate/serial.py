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
from pcaptool.decode import ETHERTYPE, Truncated
from pcaptool.decode.dnstxn import DnsTransactions
from pcaptool.decode.ip import PROTO_NAMES
from pcaptool.decode.table import endpoints, walk
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
from pcaptool.tcp.annotate import on_tcp
from pcaptool.tcp.expert import TcpExpert
from pcaptool.tcp.outcome import UdpFlows, icmp_error, merge_conn_record
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
        self,
        input_name: str = "-",
        analyzer: Analyzer | None = None,
        expert: bool = True,
        run_id: str | None = None,
    ) -> None:
        # the run id: given, or PCAP_RUN_ID (set by `pcaptool translate`, seen by its workers)
        self.run_id = run_id or os.environ.get(RUN_ID_ENV) or None
        self.input_name = input_name
        self.analyzer = analyzer
        self.flows = FlowTable()
        self.clock = Clock()
        self.expert = TcpExpert() if expert else None  # tcp.analysis (docs/expert.md)
        # connection records (--flows): UDP ones here, outcomes added to the TCP ones
        self.udp = UdpFlows() if getattr(analyzer, "flows", False) else None
        self.dns = DnsTransactions()
        self._pending: list[dict] = []  # records of their own: UDP connections, DNS timeouts

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
            if exc.layer == "tcp" and self.expert and "seq" in rec.get("tcp", ()):
                ip = rec["ip"]  # options cut short (not just ports kept): still analysed
                on_tcp(self.expert, rec, rec["tcp"], ip["src"], ip["dst"], pkt.ts_ns)
            set_error(rec, prefix, exc.layer, exc.reason)
        except Exception as exc:  # a decoder bug: this packet's record says so, the rest go on
            set_error(rec, prefix, "internal", f"{type(exc).__name__} while decoding")
        finish_labels(rec, self.run_id)
        return rec

    def _layers(self, num: int, pkt: Packet, rec: dict) -> str:
        """Decode every layer (pcaptool.decode.table), then give the innermost packet its
        flow and the TCP analysis. A layer cut short still leaves what came before it
        (addresses, ports) on the record, with its flow; the error is raised after."""
        buf = pkt.data
        try:
            layer, table, key, off, end = walk(buf, pkt.linktype, rec)
        except Truncated as exc:
            ends = endpoints(rec)
            if ends is not None:
                self._flow(rec, *ends)
            raise exc
        ends = endpoints(rec) if layer != "arp" else None
        if ends is None:
            if layer == "arp":
                msg = _arp_message(rec["arp"])
            elif table is ETHERTYPE:
                msg = f"ethertype 0x{key:04x} len={pkt.wirelen}"
            else:
                msg = f"{layer} len={pkt.wirelen}"
            return msg + _encap_note(rec)
        proto, src, dst, sport, dport = ends
        flow = self._flow(rec, proto, src, dst, sport, dport)
        if proto == 17 and self.udp is not None and "udp" in rec:
            n = rec["udp"]["len"]
            self._pending += self.udp.packet(flow, src, sport, dst, dport, n, pkt.ts_ns, num)
        ip = rec.get("ip")
        if ip is None:  # a tunnel whose inner packet is not IP: the outer one's flow
            msg = f"{layer.upper()} {src} > {dst} len={pkt.wirelen}"
            if table is ETHERTYPE:
                msg += f" ethertype 0x{key:04x}"
        elif layer == "ip":
            v = ip["version"]
            if ip.get("frag_offset"):
                msg = f"IPv{v} {src} > {dst} fragment offset={ip['frag_offset']} proto={proto}"
            else:
                name = PROTO_NAMES.get(proto, "?")
                msg = f"IPv{v} {src} > {dst} proto={proto} ({name}) len={end - off}"
        elif "tcp" in rec:
            msg = self._tcp(num, pkt, rec, flow, layer, end)
        elif layer == "icmp":
            icmp = rec["icmp"]
            what = "ICMP" if icmp["version"] == 4 else "ICMPv6"
            msg = f"{what} {src} > {dst} {_icmp_message(icmp)}"
            if "orig" in icmp:
                icmp_error(rec, self.expert, self.udp)
        elif layer == "dns":
            msg = f"DNS {endpoint(src, sport)} > {endpoint(dst, dport)} {_dns_message(rec['dns'])}"
            msg += self._dns_txn(rec, src, sport, dst, dport, pkt.ts_ns)
        else:
            msg = f"UDP {endpoint(src, sport)} > {endpoint(dst, dport)} len={rec['udp']['len']}"
        return msg + _encap_note(rec) if "encap" in rec else msg

    def _tcp(self, num: int, pkt: Packet, rec: dict, flow: Flow, layer: str, end: int) -> str:
        """TCP state, the analysis and the message of the innermost TCP segment, which
        ends at `end` (whatever application layer was decoded after it)."""
        seg = rec["tcp"]
        src, dst = rec["ip"]["src"], rec["ip"]["dst"]
        sport, dport, size = seg["sport"], seg["dport"], seg["len"]
        buf = pkt.data
        flags = buf[end - size - seg["hdr_len"] + 13]  # the flag bits (RFC 9293 section 3.1)
        payload = buf[end - size : end] if size else b""
        side = direction(src, sport, dst, dport)
        if flags & 0x04:  # RST
            flow.closed = True
            mark_last(rec)
        elif flags & 0x01:  # FIN
            flow.fin |= 1 << side
            if flow.fin == 3:
                flow.closed = True
                mark_last(rec)
        tags = on_tcp(self.expert, rec, seg, src, dst, pkt.ts_ns, flags) if self.expert else ""
        note = None
        if self.analyzer is not None:
            note = self.analyzer.on_tcp(
                rec, flow, side, self._segment(pkt, rec, src, dst, seg, flags, payload, num)
            )
        what = "TCP"
        if layer != "tcp":
            what = "DNS" if layer == "dns" and "dns" in rec else "TLS" if layer == "tls" else "TCP"
        msg = (
            f"{what} {flow.ends(side, src, sport, dst, dport)} [{seg['flags_str']}] "
            f"seq={seg['seq']} ack={seg['ack']} win={seg['window']} len={size}"
        )
        if note:
            msg += " " + note
        elif what == "DNS":
            msg += " " + _dns_message(rec["dns"])
        elif what == "TLS":
            msg += " " + _tls_message(rec["tls"])
        return msg + " " + tags if tags else msg

    def _dns_txn(self, rec: dict, src: str, sport: int, dst: str, dport: int, ts: int) -> str:
        """Match unicast DNS (not mDNS, LLMNR) queries and responses; queue timeouts."""
        if dport != 53 and sport != 53:
            return ""
        txn = self.dns.message(rec, src, sport, dst, dport, ts)
        if self.dns.pending:
            self._pending += self.dns.expire(ts)
        return txn

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
        set_flow(rec, flow, PROTO_NAMES.get(proto) or str(proto), first)
        return flow

    def records(self, reader: Iterable[Packet]) -> Iterator[dict]:
        """Records for every packet of `reader`, then whatever the analyzer still holds."""
        names = _iface_names(reader)
        analyzer = self.analyzer
        last = None
        num = 0
        for pkt in reader:
            if type(pkt) is not Packet:  # a run of packets shed by a bounded backlog
                num = pkt.last
                yield pkt.record(self)
                continue
            num += 1
            yield self.translate(num, pkt, names(pkt.iface))
            last = pkt.ts_ns
            if analyzer is not None:
                done = analyzer.take_records()
                if done:
                    yield from self.with_outcomes(done)
            if self._pending:
                yield from self._pending
                self._pending = []
        if analyzer is not None:
            yield from self.with_outcomes(analyzer.finish())
            if self.udp is not None:
                yield from self.udp.expire()
        yield from self.dns.finish(last)

    def with_outcomes(self, records: list[dict]) -> list[dict]:
        """The analyzer's connection records, with their outcome (pcaptool/tcp/outcome.py)."""
        for rec in records:
            merge_conn_record(rec, self.expert)
        return records


def _iface_names(reader):
    if isinstance(reader, CaptureReader) or hasattr(reader, "interfaces"):

        def names(index: int) -> str | None:
            ifaces = reader.interfaces
            return ifaces[index].name if index < len(ifaces) else None

        return names
    return lambda index: None


def _encap_note(rec: dict) -> str:
    encap = rec.get("encap")
    if not encap:
        return ""
    return " (in " + " ".join(_encap_word(e) for e in encap) + ")"


def _encap_word(layer: dict) -> str:
    kind = layer["type"]
    if kind in ("ipv4", "ipv6"):
        return f"{kind} {layer['src']} > {layer['dst']}"
    if kind == "udp":
        return f"udp {layer['sport']} > {layer['dport']}"
    if kind in ("vxlan", "geneve"):
        return f"{kind} vni={layer['vni']}"
    if kind == "mpls":
        return "mpls " + ",".join(map(str, layer["labels"]))
    if kind == "pppoe":
        return f"pppoe session=0x{layer['session']:04x}"
    return kind


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
