"""The record envelope: the keys every record shares, built in this one place.

A record is a Cloud Logging structured log entry
(https://cloud.google.com/logging/docs/structured-logging): `timestamp`, `severity`,
`message`, `logging.googleapis.com/labels` and `logging.googleapis.com/operation` become
fields of the log entry. docs/schema.md describes them and
pcaptool/schema/record.schema.json validates them. Packet records (`packet_record`) and
connection records (`conn_record`) both take their timestamp, flow, labels and operation
from here; the layers and analyzers only add their own objects.

Direction is 0 or 1 everywhere: 0 when (src, sport) sorts before (dst, dport), the order
`direction()` computes, so both directions of a flow agree without a table.
"""

from __future__ import annotations

import time

from pcaptool.record.flow import Flow

LABELS = "logging.googleapis.com/labels"
OPERATION = "logging.googleapis.com/operation"
TRACE = "logging.googleapis.com/trace"
PRODUCER = "github.com/pcaptool"
# One capture run's id (`pcap.id`, label `run`): `pcaptool translate` sets it for itself
# and its workers; connection records, built inside the analyzers, read it here.
RUN_ID_ENV = "PCAP_RUN_ID"


def direction(src: str, sport: int, dst: str, dport: int) -> int:
    """0 when (src, sport) sorts before (dst, dport), else 1: the same for a flow's
    two directions, the other way round."""
    return 0 if src < dst or (src == dst and sport < dport) else 1


def endpoint(addr: str, port: int) -> str:
    """`10.0.0.1:80`, `[2001:db8::1]:443`: an address and port as messages print them."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def format_latency(ns: int) -> str:
    """Cloud Logging's Duration: seconds with up to nine decimals and an "s" suffix."""
    global _last_latency
    last = _last_latency  # one tuple, read and replaced whole: no torn pair across threads
    if ns == last[0]:  # an HTTP response formats its latency twice in a row
        return last[1]
    if 0 < ns < 1_000_000_000:  # the usual case: no whole seconds to convert
        text = ("0.%09d" % ns).rstrip("0") + "s"  # noqa: UP031 (faster here)
    else:
        sign = "-" if ns < 0 else ""
        sec, frac = divmod(abs(ns), 1_000_000_000)
        text = f"{sign}{sec}.{frac:09d}".rstrip("0") + "s" if frac else f"{sign}{sec}s"
    _last_latency = (ns, text)
    return text


_last_latency: tuple[int | None, str] = (None, "")  # format_latency's last argument, answer


def timestamp(ts_ns: int) -> dict:
    sec, nanos = divmod(ts_ns, 1_000_000_000)
    return {"seconds": sec, "nanos": nanos}


class Clock:
    """RFC 3339 dates of capture times, formatting each second once: `text` is the date
    and time of the capture second `second`, `dot` the same with the decimal point (the
    translator reads them directly, as `stamp` does)."""

    __slots__ = ("second", "text", "dot")

    def __init__(self) -> None:
        self.second = -1
        self.text = self.dot = ""

    def tick(self, sec: int) -> None:
        """Make `sec` (seconds since the epoch) the current second."""
        self.second = sec
        self.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        self.dot = self.text + "."

    def stamp(self, nanos: int) -> str:
        """`2024-06-01T12:00:00.123456789Z`: the current second and `nanos` (< 10**9)."""
        # nine digits already (nine times in ten): no zero padding, so no format spec
        if nanos >= 100_000_000:
            return f"{self.dot}{nanos}Z"
        return "%s.%09dZ" % (self.text, nanos)  # noqa: UP031 (faster than a format spec)

    def date(self, ts_ns: int) -> tuple[int, int, str]:
        """(seconds, nanoseconds, `2024-06-01T12:00:00.123456789Z`) of `ts_ns`."""
        sec, nanos = divmod(ts_ns, 1_000_000_000)
        if sec != self.second:
            self.tick(sec)
        return sec, nanos, self.stamp(nanos)


def packet_record(clock: Clock, ts_ns: int, pcap: dict) -> dict:
    """A packet record's envelope: timestamp, DEFAULT severity, an empty message, `pcap`
    (whose `date` is filled in here). `Translator.translate` builds the same in line."""
    sec, nanos, date = clock.date(ts_ns)
    pcap["date"] = date
    return {
        "timestamp": {"seconds": sec, "nanos": nanos},
        "severity": "DEFAULT",
        "message": "",
        "pcap": pcap,
    }


def set_error(rec: dict, prefix: str, layer: str, reason: str) -> None:
    """A packet that did not decode: ERROR severity, `error`, and the message saying so."""
    rec["severity"] = "ERROR"
    rec["error"] = {"layer": layer, "reason": reason}
    rec["message"] = f"{prefix}ERROR {layer}: {reason}"


def set_flow(rec: dict, flow: Flow, proto: str, first: bool = False, last: bool = False) -> None:
    """`flow`, the labels and the operation of a record of `flow` (`proto`: `TCP`, …)."""
    rec["flow"] = {"id": flow.id, "community_id": flow.community_id}
    rec[LABELS] = {"flow": flow.id, "proto": proto}
    op: dict = {"id": flow.id, "producer": PRODUCER}
    if first:
        op["first"] = True
    if last:
        op["last"] = True
    rec[OPERATION] = op


def mark_last(rec: dict) -> None:
    """The record's packet ends its flow (TCP RST, or the FIN completing both FINs).
    A new operation: the translator's is shared by the records of the flow."""
    rec[OPERATION] = {**rec[OPERATION], "last": True}


def conn_record(ts_ns: int, flow: Flow | None, message: str, conn: dict) -> dict:
    """A connection summary as a record of its own (like a line of Zeek's conn.log): INFO,
    no `pcap`, the flow's operation marked `last`; the run id is the translator's to add."""
    rec = {"timestamp": timestamp(ts_ns), "severity": "INFO", "message": message, "conn": conn}
    if flow is not None:
        set_flow(rec, flow, "TCP", last=True)  # upper-case, as on packet records
    finish_labels(rec)
    return rec


def warn(rec: dict) -> None:
    """Raise a record to WARNING unless it already says something graver."""
    if rec.get("severity") in (None, "DEFAULT"):
        rec["severity"] = "WARNING"


def finish_labels(rec: dict, run_id: str | None = None) -> None:
    """Labels and operation on every record kind, and the run id (`pcap.id`, label `run`).

    Records of a flow have theirs from `set_flow`. An ARP record gets `proto: ARP` and an
    operation per address pair (both directions alike); a record that failed to decode
    before its flow was known gets `proto` from the layer that failed and an operation
    for the run's errors. So one run, one protocol or one ARP exchange is one Cloud
    Logging query on labels.
    """
    labels = rec.get(LABELS)
    if labels is None:
        if "arp" in rec:
            a = rec["arp"]
            pair = sorted((a.get("sender_ip", "?"), a.get("target_ip", "?")))
            labels, op_id = {"proto": "ARP"}, f"arp-{pair[0]}-{pair[1]}"
        else:
            layer = (rec.get("error") or {}).get("layer", "l2")
            labels, op_id = {"proto": layer.upper()}, f"errors-{run_id or 'run'}"
        rec[LABELS] = labels
        rec[OPERATION] = {"id": op_id, "producer": PRODUCER}
    if run_id:
        labels["run"] = run_id
        pcap = rec.get("pcap")
        if pcap is not None:
            pcap["id"] = run_id
