"""How each connection went, for the connection records (`--flows`).

TCP: the expert analysis (pcaptool/tcp/expert.py) keeps, per connection, the SYNs, the
first FIN and RST, retransmissions, duplicate ACKs and zero-window time per direction;
`tcp_outcome` turns that into the `conn` keys. UDP: `UdpFlows` counts packets and bytes
per direction of each (address, port) pair and writes a connection record when the pair
has been idle for the flow timeout, or at the end of the input. ICMP errors that quote a
TCP or UDP packet are attached to that connection and linked by flow id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcaptool.record.flow import community_digest
from pcaptool.tcp.expertflags import ACK, ANY_RETRANSMISSION, DUPLICATE_ACK, FIN, RST, SYN

if TYPE_CHECKING:
    from pcaptool.tcp.expert import Conn, Side, TcpExpert

MAX_ICMP = 8  # ICMP errors kept per connection
FAILED = {"refused", "timeout", "reset"}


def count(side: Side, bits: int, seglen: int) -> None:
    """Retransmissions and duplicate ACKs of one analysed segment."""
    if bits & ANY_RETRANSMISSION:
        side.rt_segs += 1
        side.rt_bytes += seglen
    if bits & DUPLICATE_ACK:
        side.dupacks += 1


def control(conn: Conn, i: int, ts: int, flags: int, out: dict | None) -> dict | None:
    """SYN, FIN and RST bookkeeping of side `i`; a RST mid-data marks the analysis."""
    if flags & SYN:
        if not flags & ACK:
            conn.syns += 1
            conn.syn_last = ts
            if conn.syn_side < 0:
                conn.syn_side, conn.syn_first = i, ts
        else:
            conn.synack = True
    if flags & FIN:
        conn.fins |= 1 << i
        if conn.fin_side < 0:
            conn.fin_side = i
    elif flags & RST:
        if conn.rst_side < 0:
            conn.rst_side = i
            conn.rst_bytes = conn.sides[0].bytes + conn.sides[1].bytes
        if conn.data and conn.fins != 3:
            out = out if out is not None else {}
            out["mid_data_reset"] = True  # pcaptool's own: no tshark counterpart
    return out


def tcp_outcome(conn: Conn, orig: int, end: str) -> dict:
    """The outcome keys of a TCP connection record; `orig` is the originator's side index,
    `end` why the record is written (`closed`, `timeout`, `evicted`, `end`)."""
    o, r = conn.sides[orig], conn.sides[1 - orig]
    heard = r.bytes or r.lastack or r.nextseq  # anything from the responder
    c: dict = {}
    if conn.syns and not heard:  # SYNs only, perhaps given up on with a RST or FIN
        gave_up = conn.syns > 1 or end == "timeout" or conn.rst_side >= 0 or conn.fins
        c["outcome"] = "timeout" if gave_up else "half-open"
    elif conn.rst_side >= 0:
        by = "orig" if conn.rst_side == orig else "resp"
        if by == "resp" and conn.syns and not conn.synack:
            c["outcome"] = "refused"
        else:
            c["outcome"] = "reset"
            c["reset_by"] = by
            c["reset_after_bytes"] = conn.rst_bytes
    elif conn.fins:
        c["outcome"] = "closed"
        c["closed_by"] = "orig" if conn.fin_side == orig else "resp"
    elif conn.syns and not (conn.synack and conn.first_rtt):
        c["outcome"] = "half-open"
    elif conn.syns or (o.nextseq and r.nextseq):
        c["outcome"] = "ongoing" if end == "end" else "established"
    else:
        c["outcome"] = "half-open"  # one direction only, no handshake seen
    if conn.syns:
        c["syn_retries"] = conn.syns - 1
        c["syn_wait"] = (conn.last_ts if not heard else conn.syn_last) - conn.syn_first
    if conn.first_rtt and conn.synack:
        c["handshake_rtt"] = conn.first_rtt
    for name, side in (("orig", o), ("resp", r)):
        zw = side.zw_time + (conn.last_ts - side.zw_start if side.zw_start else 0)
        c[name] = {
            "retransmitted_segments": side.rt_segs,
            "retransmitted_bytes": side.rt_bytes,
            "duplicate_acks": side.dupacks,
            "zero_window_time": zw,
        }
    if conn.icmp:
        c["icmp"] = list(conn.icmp)
    return c


def merge_conn_record(rec: dict, expert: TcpExpert | None) -> None:
    """Add the outcome to a TCP connection record written by the TCP analysis."""
    c = rec.get("conn")
    if not c or c.get("proto") != "tcp" or expert is None:
        return
    o, r = c["orig"], c["resp"]
    hit = expert.find(o["ip"], o["port"], r["ip"], r["port"])
    if hit is None:
        return
    conn, orig = hit
    add = tcp_outcome(conn, orig, c.get("end", "end"))
    o.update(add.pop("orig"))
    r.update(add.pop("resp"))
    c.update(add)
    rec["message"] = rec.get("message", "") + f" {add['outcome']}"
    if add["outcome"] in FAILED:
        rec["severity"] = "WARNING"


def icmp_error(rec: dict, expert: TcpExpert | None, udp: UdpFlows | None) -> None:
    """Link an ICMP error to the connection it quotes: `icmp.orig.flow` is its flow id,
    and the connection keeps the error for its record."""
    icmp = rec.get("icmp")
    q = icmp.get("orig") if icmp else None
    if not q or "sport" not in q or q["proto"] not in (6, 17):
        return
    key = (q["src"], q["sport"], q["dst"], q["dport"])
    q["flow"] = community_digest(q["proto"], *key[::2], *key[1::2])[:8].hex()
    note = {"num": rec["pcap"]["num"], "name": icmp["name"], "from": rec["ip"]["src"]}
    hit = None
    if q["proto"] == 6 and expert is not None:
        hit = expert.find(*key)
        errors = hit[0].icmp if hit is not None else None
    elif udp is not None:
        flow = udp.flows.get(key) or udp.flows.get((key[2], key[3], key[0], key[1]))
        errors = flow[8] if flow is not None else None
    else:
        errors = None
    if errors is not None and len(errors) < MAX_ICMP:
        errors.append(note)


class UdpFlows:
    """UDP "connections": a flow id seen within the flow timeout, per direction counts."""

    def __init__(self, timeout_ns: int = 120_000_000_000, limit: int = 100_000) -> None:
        self.timeout = timeout_ns
        self.limit = limit
        # key (orig src, sport, dst, dport) -> [Flow, first ts, last ts, first num,
        # last num, orig packets, orig bytes, resp packets, icmp errors, resp bytes]
        self.flows: dict[tuple, list] = {}

    def packet(self, flow, src: str, sport: int, dst: str, dport: int, n: int, ts: int, num: int):
        """Count one datagram of `n` payload bytes; over the limit, the records of the
        flows that had to go."""
        flows = self.flows
        key = (src, sport, dst, dport)
        f = flows.get(key)
        if f is not None:
            f[5] += 1
            f[6] += n
        else:
            f = flows.get((dst, dport, src, sport))
            if f is not None:
                f[7] += 1
                f[9] += n
            else:
                f = flows[key] = [flow, ts, ts, num, num, 1, n, 0, [], 0]
        f[2], f[4] = ts, num
        if len(flows) > self.limit:  # the translator expires idle flows once a second
            return self.expire(ts)
        return ()

    def expire(self, ts: int | None = None) -> list[dict]:
        """Records of the flows idle for the timeout as of `ts` (None: every flow: the end)."""
        flows = self.flows
        if ts is None:
            done = list(flows)
        else:
            done = [k for k, f in flows.items() if ts - f[2] >= self.timeout]
            if len(flows) - len(done) > self.limit:  # over the limit: the longest idle go too
                rest = sorted((f[2], k) for k, f in flows.items() if ts - f[2] < self.timeout)
                done += [k for _, k in rest[: len(flows) - len(done) - self.limit]]
        end = "end" if ts is None else "timeout"
        return [_udp_record(k, flows.pop(k), end) for k in done]


def _udp_record(key: tuple, f: list, end: str) -> dict:
    (oip, oport, rip, rport) = key
    c = {
        "proto": "udp",
        "end": end,
        "duration": f[2] - f[1],
        "first_num": f[3],
        "last_num": f[4],
        "orig": {"ip": oip, "port": oport, "packets": f[5], "bytes": f[6]},
        "resp": {"ip": rip, "port": rport, "packets": f[7], "bytes": f[9]},
    }
    if f[8]:
        c["icmp"] = f[8]
    a = f"[{oip}]:{oport}" if ":" in oip else f"{oip}:{oport}"
    b = f"[{rip}]:{rport}" if ":" in rip else f"{rip}:{rport}"
    sec, nanos = divmod(f[2], 1_000_000_000)
    flow = f[0]
    return {
        "timestamp": {"seconds": sec, "nanos": nanos},
        "severity": "WARNING" if f[8] else "INFO",
        "message": f"conn UDP {a} > {b} {f[5]}/{f[7]} pkts {f[6]}/{f[9]} bytes"
        + (f" {len(f[8])} ICMP errors" if f[8] else ""),
        "conn": c,
        "flow": {"id": flow.id, "community_id": flow.community_id},
        "logging.googleapis.com/labels": {"flow": flow.id, "proto": "UDP"},
        "logging.googleapis.com/operation": {
            "id": flow.id,
            "producer": "github.com/pcaptool",
            "last": True,
        },
    }
