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
from pcaptool.decode import ETHERTYPE, IP_FRAGMENT, Truncated
from pcaptool.decode.dnstxn import DNS_TIMEOUT_NS, DnsTransactions
from pcaptool.decode.ip import PROTO_NAMES
from pcaptool.decode.ipfrag import Reassembler
from pcaptool.decode.table import endpoints, walk
from pcaptool.record.envelope import (
    LABELS,
    OPERATION,
    PRODUCER,
    RUN_ID_ENV,
    Clock,
    endpoint,
    finish_labels,
    mark_last,
    set_error,
)
from pcaptool.record.flow import Flow, FlowTable
from pcaptool.tcp.annotate import analyse, on_tcp
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
        dns_timeout_ns: int = DNS_TIMEOUT_NS,
        ifaces: list | None = None,
    ) -> None:
        # the run id: given (translate passes its own), else PCAP_RUN_ID
        self.run_id = run_id or os.environ.get(RUN_ID_ENV) or None
        self.input_name = input_name
        # the interfaces the input was captured on, as this system knows them (--iface)
        self.ifaces = ifaces or []
        self.analyzer = analyzer
        self.flows = FlowTable()
        self._by_key = self.flows.by_key
        self.clock = Clock()
        self.expert = TcpExpert() if expert else None  # tcp.analysis (docs/expert.md)
        # connection records (--flows): UDP ones here, outcomes added to the TCP ones
        self.udp = UdpFlows() if getattr(analyzer, "flows", False) else None
        self.dns = DnsTransactions(dns_timeout_ns)
        self.fragments = Reassembler()  # IP fragments (docs/schema.md `ip.fragment`)
        streams = getattr(analyzer, "dns_streams", None)  # DNS over TCP, from the stream
        if streams is not None:
            streams.sink = self.dns.message
        self._pending: list[dict] = []  # records of their own: UDP connections, DNS timeouts
        self._next_expiry = 0  # capture time of the next second: UDP flows, DNS queries
        self._iface_last: tuple = (-1, None, None, None)  # `_iface`'s last answer

    def translate(self, num: int, pkt: Packet, iface_name: str | None = None) -> dict:
        """The record of packet `num` (1-based in its input): the envelope
        (`pcaptool.record.envelope.packet_record`'s, built here in one go), the layers, the
        flow, the labels and the run id."""
        ts = pkt.ts_ns
        if ts >= self._next_expiry:
            self.expire(ts)
        index = pkt.iface
        last = self._iface_last  # the previous packet's interface, most often this one's
        if index != last[0] or iface_name != last[1]:
            last = self._iface_last = self._iface(index, iface_name)
        iface, iface_name = last[2], last[3]
        sec, nanos = divmod(ts, 1_000_000_000)
        clock = self.clock
        if sec != clock.second:
            clock.tick(sec)
        linktype, caplen, wirelen, run_id = pkt.linktype, pkt.caplen, pkt.wirelen, self.run_id
        pcap = {
            "num": num,
            # Clock.stamp, in line
            "date": f"{clock.dot}{nanos}Z"
            if nanos >= 100_000_000
            else "%s.%09dZ" % (clock.text, nanos),  # noqa: UP031
            "file": self.input_name,
            "iface": iface,
            "linktype": LINKTYPE_NAMES.get(linktype) or str(linktype),
            "len": wirelen,
            "caplen": caplen,
            "truncated": caplen < wirelen,
        }
        if run_id:
            pcap["id"] = run_id
        rec = {
            "timestamp": {"seconds": sec, "nanos": nanos},
            "severity": "DEFAULT",
            "message": "",
            "pcap": pcap,
        }
        prefix = f"#{num} {iface_name} " if iface_name else f"#{num} "  # the interface if named
        try:
            rec["message"] = prefix + self._layers(num, pkt, rec)
        except Truncated as exc:
            if exc.layer == "tcp" and self.expert and "seq" in rec.get("tcp", ()):
                ip = rec["ip"]  # options cut short (not just ports kept): still analysed
                on_tcp(self.expert, rec, rec["tcp"], ip["src"], ip["dst"], ts)
            set_error(rec, prefix, exc.layer, exc.reason)
        except Exception as exc:  # a decoder bug: this packet's record says so, the rest go on
            set_error(rec, prefix, "internal", f"{type(exc).__name__} while decoding")
        if LABELS not in rec:  # no flow (`_flow` labels a flow's records, run id included)
            finish_labels(rec, run_id)
        return rec

    def _iface(self, index: int, name: str | None) -> tuple:
        """(index, name, `pcap.iface`, the name messages print) of the packet's interface
        `index`, named `name` by the capture (or not): as --iface knows it, if it does.
        `pcap.iface` is shared by the records of the interface: never changed once made."""
        iface = {"index": index, "name": name}
        if index < len(self.ifaces):
            live = self.ifaces[index]
            if name in (None, live.name):
                iface["name"] = live.name
                iface.update(live.fields())
        return index, name, iface, iface["name"]

    def _layers(self, num: int, pkt: Packet, rec: dict) -> str:
        """Decode every layer (pcaptool.decode.table), then give the innermost packet its
        flow and the TCP analysis. A layer cut short still leaves what came before it
        (addresses, ports) on the record, with its flow; the error is raised after."""
        buf = pkt.data
        try:
            layer, table, key, off, end = walk(buf, pkt.linktype, rec)
            if table is IP_FRAGMENT:  # held; the packet that completes it gets the payload
                pkt, (layer, table, key, off, end) = self.fragments.add(
                    num, pkt, rec, key, off, end
                )
        except Truncated as exc:
            ends = endpoints(rec)
            if ends is not None:
                self._flow(rec, *ends)
            raise exc
        ip = rec.get("ip")
        if ip is not None and layer != "ip" and layer != "arp":  # the common case first
            seg = rec.get("tcp")
            if seg is not None and ip["proto"] == 6:
                src, dst, sport, dport = ip["src"], ip["dst"], seg["sport"], seg["dport"]
                flow = self._by_key.get((6, src, sport, dst, dport))  # `_flow`'s first lines
                if flow is not None and flow.shared is not None:  # (its common case) in line
                    rec["flow"], rec[LABELS], rec[OPERATION] = flow.shared
                else:
                    flow = self._share(rec, flow, 6, src, dst, sport, dport)
                msg = self._tcp(num, pkt, rec, flow, layer, end, seg, src, sport, dst, dport)
                return msg + _encap_note(rec) if "encap" in rec else msg
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
            over = self.udp.packet(flow, src, sport, dst, dport, n, pkt.ts_ns, num)
            if over:
                self._pending += self._labelled(over)
        if ip is None:  # a tunnel whose inner packet is not IP: the outer one's flow
            msg = f"{layer.upper()} {src} > {dst} len={pkt.wirelen}"
            if table is ETHERTYPE:
                msg += f" ethertype 0x{key:04x}"
        elif layer == "ip":
            v = ip["version"]
            if ip.get("frag_offset") or "fragment" in ip:
                msg = f"IPv{v} {src} > {dst} fragment offset={ip['frag_offset']} proto={proto}"
            else:
                name = PROTO_NAMES.get(proto, "?")
                msg = f"IPv{v} {src} > {dst} proto={proto} ({name}) len={end - off}"
        elif "tcp" in rec:
            msg = self._tcp(num, pkt, rec, flow, layer, end, rec["tcp"], src, sport, dst, dport)
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

    def _tcp(
        self, num: int, pkt: Packet, rec: dict, flow: Flow, layer: str, end: int,
        seg: dict, src: str, sport: int, dst: str, dport: int,
    ) -> str:  # fmt: skip
        """TCP state, the analysis and the message of the innermost TCP segment `seg`
        (`rec["tcp"]`, from `src`:`sport` to `dst`:`dport`), which ends at `end` (whatever
        application layer was decoded after it)."""
        size = seg["len"]
        buf = pkt.data
        flags = buf[end - size - seg["hdr_len"] + 13]  # the flag bits (RFC 9293 section 3.1)
        # direction(), in line
        side = 0 if src < dst or (src == dst and sport < dport) else 1
        if flags & 0x04:  # RST
            flow.closed = True
            mark_last(rec)
        elif flags & 0x01:  # FIN
            flow.fin |= 1 << side
            if flow.fin == 3:
                flow.closed = True
                mark_last(rec)
        seq, ack, window = seg["seq"], seg["ack"], seg["window"]
        tags = ""
        if self.expert:
            tags = analyse(
                self.expert, rec, seg, num, pkt.ts_ns, src, sport, dst, dport, seq, ack, flags,
                window, size,
            )  # fmt: skip
        note = None
        if self.analyzer is not None:
            payload = buf[end - size : end] if size else b""
            missing = 0 if pkt.caplen >= pkt.wirelen else self._missing(rec, seg, len(payload))
            note = self.analyzer.on_tcp(
                rec, flow, side, Segment(src, sport, dst, dport, seq, ack, flags, payload,
                pkt.ts_ns, num, window, missing),
            )  # fmt: skip
        what = "DNS" if "dns" in rec else "TLS" if layer == "tls" else "TCP"
        texts = flow.texts  # Flow.ends, once made, in line
        ends = texts[side] if texts is not None else flow.ends(side, src, sport, dst, dport)
        msg = f"{what} {ends} [{seg['flags_str']}] seq={seq} ack={ack} win={window} len={size}"
        if note:
            msg += " " + note
        elif what == "DNS":
            msg += " " + _dns_message(rec["dns"]) + _dns_more(rec["dns"])
        elif what == "TLS":
            msg += " " + _tls_message(rec["tls"])
        return msg + " " + tags if tags else msg

    def _dns_txn(self, rec: dict, src: str, sport: int, dst: str, dport: int, ts: int) -> str:
        """Match unicast DNS (not mDNS, LLMNR) queries and responses."""
        if dport != 53 and sport != 53:
            return ""
        return self.dns.message(rec, src, sport, dst, dport, ts)

    def expire(self, ts: int) -> None:
        """Queue the UDP connection records and DNS timeouts due at capture time `ts`:
        run at the first packet of each second of capture time (before it is decoded),
        and in parallel workers when the main process says another worker's packet
        started a second (pcaptool/translate/parallel.py)."""
        self._next_expiry = (ts // 1_000_000_000 + 1) * 1_000_000_000
        if self.udp is not None and self.udp.flows:
            self._pending += self._labelled(self.udp.expire(ts))
        if self.dns.pending or self.dns.late:
            self._pending += self._labelled(self.dns.expire(ts))

    @property
    def pending(self) -> bool:
        """Records of their own are queued (`take_pending`)."""
        return bool(self._pending)

    def take_pending(self) -> list[dict]:
        """The records of their own queued by the last packet or `expire`."""
        out = self._pending
        self._pending = []
        return out

    def finish(self, last_ts: int | None) -> list[dict]:
        """End of input (the last packet at `last_ts`): every UDP connection and
        unanswered DNS query, as records of their own."""
        out = self.take_pending()
        if self.udp is not None:
            out += self.udp.expire()
        out += self.dns.finish(last_ts)
        return self._labelled(out)

    def _labelled(self, records: list[dict]) -> list[dict]:
        for rec in records:
            finish_labels(rec, self.run_id)
        return records

    @staticmethod
    def _missing(rec: dict, seg: dict, captured: int) -> int:
        """The payload bytes the snaplen cut off: the IP length says how many."""
        ip = rec["ip"]
        return max(ip["len"] - ip.get("hdr_len", 40) - seg["hdr_len"] - captured, 0)

    def _flow(
        self, rec: dict, proto: int, src: str, dst: str, sport: int | None, dport: int | None
    ) -> Flow:
        """`flow`, the labels (with the run id) and the operation of a record of the flow
        (as `pcaptool.record.envelope.set_flow` and `finish_labels` make them). The three
        dicts are made once per flow (`Flow.shared`) and shared by its records after the
        first: nothing changes them once made (`mark_last` puts a new operation)."""
        flow = self._by_key.get((proto, src, sport, dst, dport))  # FlowTable.get's hit, in line
        if flow is not None and flow.shared is not None:  # a flow seen before: the common case
            rec["flow"], rec[LABELS], rec[OPERATION] = flow.shared
            return flow
        return self._share(rec, flow, proto, src, dst, sport, dport)

    def _share(
        self, rec: dict, flow: Flow | None, proto: int, src: str, dst: str,
        sport: int | None, dport: int | None,
    ) -> Flow:  # fmt: skip
        """`_flow` for a flow whose dicts are not made yet: `flow` is its entry in the
        flow table (None: a new flow, created here)."""
        if flow is None:
            flow, first = self.flows.get(proto, src, dst, sport, dport)
        else:
            first = False
        fid, run_id = flow.id, self.run_id
        name = PROTO_NAMES.get(proto) or str(proto)
        rec["flow"], rec[LABELS], op = flow.shared = (
            {"id": fid, "community_id": flow.community_id},
            {"flow": fid, "proto": name, "run": run_id} if run_id else {"flow": fid, "proto": name},
            {"id": fid, "producer": PRODUCER},
        )
        rec[OPERATION] = {"id": fid, "producer": PRODUCER, "first": True} if first else op
        return flow

    def records(self, reader: Iterable[Packet]) -> Iterator[dict]:
        """Records for every packet of `reader`, then whatever the analyzer still holds."""
        holder = _iface_holder(reader)
        analyzer = self.analyzer
        last = None
        num = 0
        for pkt in reader:
            if type(pkt) is not Packet:  # a run of packets shed by a bounded backlog
                num = pkt.last
                yield pkt.record(self)
                continue
            num += 1
            index, ifaces = pkt.iface, holder.interfaces  # the name of the packet's interface
            yield self.translate(num, pkt, ifaces[index].name if index < len(ifaces) else None)
            last = pkt.ts_ns
            if analyzer is not None:
                done = analyzer.take_records()
                if done:
                    yield from self.with_outcomes(done)
            if self._pending:
                yield from self.take_pending()
        if analyzer is not None:
            yield from self.with_outcomes(analyzer.finish())
        yield from self.finish(last)

    def with_outcomes(self, records: list[dict]) -> list[dict]:
        """The analyzer's connection records, with their outcome (pcaptool/tcp/outcome.py)."""
        for rec in records:
            merge_conn_record(rec, self.expert)
        return self._labelled(records)


class _NoInterfaces:
    interfaces: tuple = ()


def _iface_holder(reader):
    """What holds the interfaces of `reader`'s current section as `interfaces` (read per
    packet: a new section brings new ones): a CaptureReader's framer (without the
    reader's property), a reader that has them, else an empty tuple's holder."""
    if isinstance(reader, CaptureReader):
        return reader.framer
    return reader if hasattr(reader, "interfaces") else _NoInterfaces


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


def _dns_more(d: dict) -> str:
    """Over TCP: the latency of a matched response, and the other messages completed."""
    text = f" {d['latency'] / 1e6:.3f}ms" if "latency" in d else ""
    return text + (f" (+{len(d['more'])} more)" if "more" in d else "")


def _tls_message(t: dict) -> str:
    parts = [t.get("handshake") or "+".join(r["type"] for r in t["records"][:3])]
    if "sni" in t:
        parts.append(f"sni={t['sni']}")
    if "alpn" in t:
        parts.append("alpn=" + ",".join(t["alpn"]))
    return " ".join(parts)
