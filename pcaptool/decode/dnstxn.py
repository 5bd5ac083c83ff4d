"""DNS transactions: each response matched to the query it answers, unanswered queries.

A query waits for its response under the key (client address and port, server address
and port, id, question); a response with that key (endpoints reversed) within `timeout`
answers it: the response record gets `dns.query` (the query's `pcap.num`, id and time)
and `dns.latency`. A query still unanswered when `timeout` has passed (checked as the
capture's clock advances) or at the end of the input is reported in a record of its own
with `dns.outcome` `timeout`. A query for the same question from the same client to the
same server while an earlier one is pending or timed out recently is a retry: it carries
`dns.retry_of` (the first query's `pcap.num`) and `dns.retries`. NXDOMAIN and SERVFAIL
responses are `WARNING`. Memory is bounded by `limit` pending queries.
"""

from __future__ import annotations

DNS_TIMEOUT_NS = 5_000_000_000  # translate --dns-timeout, PCAP_DNS_TIMEOUT
FAILING = {"NXDOMAIN", "SERVFAIL"}
SEVERITY_RANK = {"DEFAULT": 0, "DEBUG": 1, "INFO": 2, "NOTICE": 3, "WARNING": 4, "ERROR": 5}


class DnsTransactions:
    def __init__(self, timeout_ns: int = DNS_TIMEOUT_NS, limit: int = 50_000) -> None:
        self.timeout = timeout_ns
        self.limit = limit
        # (client, cport, server, sport, id, qname, qtype) -> [num, ts, first num, retries, rec]
        self.pending: dict[tuple, list] = {}
        # (client, server, qname, qtype) -> [first num, retries, last ts]: for retries
        self.asked: dict[tuple, list] = {}
        self.late: list[dict] = []  # timeouts of queries whose response came too late

    def message(
        self, rec: dict, src: str, sport: int, dst: str, dport: int, ts: int, d: dict | None = None
    ) -> str:
        """Match a decoded DNS message (`d`, by default `rec["dns"]`; over TCP one of the
        messages the packet completed); return text for the record's `message`."""
        if d is None:
            d = rec["dns"]
        qs = d.get("questions")
        q = qs[0] if qs else None
        qname = q["name"].lower() if q else ""
        qtype = q["type"] if q else ""
        if d["qr"] == "query":
            self._query(rec, d, (src, sport, dst, dport, d["id"], qname, qtype), ts)
            return ""
        key = (dst, dport, src, sport, d["id"], qname, qtype)
        hit = self.pending.pop(key, None)
        text = ""
        if hit is not None and ts - hit[1] > self.timeout:  # answered after the timeout
            self.late.append(_timeout(hit, self.timeout, key))
        elif hit is not None:
            latency = ts - hit[1]
            d["query"] = {"num": hit[0], "id": d["id"], "ts": hit[1]}
            d["latency"] = latency
            if hit[3]:
                d["retry_of"], d["retries"] = hit[2], hit[3]
            self.asked.pop((dst, src, qname, qtype), None)
            text = f" {latency / 1e6:.3f}ms"
        if d.get("rcode") in FAILING and SEVERITY_RANK.get(rec["severity"], 0) < 4:
            rec["severity"] = "WARNING"
        return text

    def _query(self, rec: dict, d: dict, key: tuple, ts: int) -> None:
        num = rec["pcap"]["num"]
        akey = (key[0], key[2], key[5], key[6])
        asked = self.asked.get(akey)
        if asked is not None and ts - asked[2] <= 2 * self.timeout:
            asked[1] += 1
            asked[2] = ts
            d["retry_of"], d["retries"] = asked[0], asked[1]
            first, retries = asked[0], asked[1]
        else:
            self.asked[akey] = [num, 0, ts]
            first, retries = num, 0
        pending = self.pending
        if len(pending) >= self.limit:
            for k in list(pending)[: self.limit // 4]:
                del pending[k]
            for k in list(self.asked)[: len(self.asked) // 4]:
                del self.asked[k]
        pending.pop(key, None)  # the same id again: the newer query is the one answered
        pending[key] = [num, ts, first, retries, _summary(rec, d)]

    def expire(self, ts: int) -> list[dict]:
        """Timeout records of the queries unanswered for longer than the timeout as of
        capture time `ts` (and of those answered too late), in the order of the queries."""
        pending = self.pending
        due = [k for k, v in pending.items() if ts - v[1] > self.timeout]
        return self._in_order([_timeout(pending.pop(k), self.timeout, k) for k in due])

    def finish(self, ts: int | None = None) -> list[dict]:
        """End of input: every query still pending is reported as a timeout."""
        out = [_timeout(v, self.timeout, k, ts) for k, v in self.pending.items()]
        self.pending.clear()
        self.asked.clear()
        return self._in_order(out)

    def _in_order(self, out: list[dict]) -> list[dict]:
        if self.late:
            out = sorted(self.late + out, key=query_num)
            self.late = []
        return out


def query_num(rec: dict) -> int:
    """The `pcap.num` of the query a timeout record reports."""
    return rec["dns"]["query"]["num"]


def _summary(rec: dict, d: dict) -> dict:
    keep = {"id": d["id"], "qr": "query", "questions": d.get("questions", [])}
    proto = "TCP" if "tcp" in rec else "UDP"
    return {"flow": rec.get("flow"), "dns": keep, "file": rec["pcap"]["file"], "proto": proto}


def _timeout(v: list, timeout: int, key: tuple, end_ts: int | None = None) -> dict:
    num, ts, first, retries, summary = v
    client, cport, server, sport, _id, qname, qtype = key
    when = ts + timeout if end_ts is None or end_ts >= ts + timeout else end_ts
    sec, nanos = divmod(when, 1_000_000_000)
    d = dict(summary["dns"])
    d["outcome"] = "timeout"
    d["query"] = {"num": num, "id": d["id"], "ts": ts}
    if retries:
        d["retry_of"], d["retries"] = first, retries
    c = f"[{client}]:{cport}" if ":" in client else f"{client}:{cport}"
    s = f"[{server}]:{sport}" if ":" in server else f"{server}:{sport}"
    rec = {
        "timestamp": {"seconds": sec, "nanos": nanos},
        "severity": "WARNING",
        "message": f"DNS {c} > {s} timeout {qtype} {qname} (query #{num}"
        + (f", retry {retries} of #{first})" if retries else ")"),
        "dns": d,
    }
    flow = summary.get("flow")
    if flow:
        rec["flow"] = flow
        rec["logging.googleapis.com/labels"] = {"flow": flow["id"], "proto": summary["proto"]}
    return rec
