"""The translator's in-line copies and shared objects give what the functions they stand
for give: `Clock.stamp` (pcap.date), `direction` and `Flow.ends` (messages, FIN pairs),
`_flow` (flow, labels and operation, made once per flow and shared by its records)."""

from __future__ import annotations

import time

import orjson
import pytest
from tcpconv import RST, Capture, Conn

from pcaptool.capfile.reader import CaptureReader
from pcaptool.record.envelope import LABELS, OPERATION, Clock, direction, finish_labels, set_flow
from pcaptool.record.flow import FlowTable
from pcaptool.translate.serial import Translator

SECOND = 1_700_000_000


@pytest.mark.parametrize(
    "nanos", [0, 1, 9, 10, 12_345, 99_999_999, 100_000_000, 100_000_001, 123_456_789, 999_999_999]
)
def test_dates_have_nine_digits_of_nanoseconds(tmp_path, nanos):
    """`Clock.stamp` (and its copy in `Translator.translate`) pads to nine digits."""
    want = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(SECOND)) + f".{nanos:09d}Z"
    clock = Clock()
    assert clock.date(SECOND * 1_000_000_000 + nanos) == (SECOND, nanos, want)
    assert clock.stamp(nanos) == want
    cap = Capture(ts_ns=SECOND * 1_000_000_000 + nanos - 1000)  # its first packet: + 1000 ns
    Conn(cap).client(b"x")
    (rec,) = _records(cap.write(tmp_path / "d.pcap"))
    assert rec["pcap"]["date"] == want
    assert rec["timestamp"] == {"seconds": SECOND, "nanos": nanos}


def _records(path, run_id: str | None = "r1") -> list[dict]:
    with open(path, "rb") as f:
        return list(Translator(path.name, run_id=run_id).records(CaptureReader(f)))


def _envelope(rec: dict, first: bool, last: bool, run_id: str | None) -> list:
    """`set_flow` and `finish_labels`'s flow, labels and operation for the record's flow."""
    ip, tcp = rec["ip"], rec["tcp"]
    flow, _ = FlowTable().get(6, ip["src"], ip["dst"], tcp["sport"], tcp["dport"])
    want: dict = {}
    set_flow(want, flow, "TCP", first=first, last=last)
    finish_labels(want, run_id)
    return [(k, list(want[k].items())) for k in ("flow", LABELS, OPERATION)]


@pytest.mark.parametrize("run_id", ["r1", None])
def test_records_of_interleaved_flows_carry_their_own_envelope(tmp_path, run_id):
    """Two connections interleaved (one closed by FIN from both ends, one by RST) and a
    third between two ports of one address (direction then goes by the ports): every
    record has the flow, labels and operation `set_flow` gives it, `first` on the first
    record of its flow only, `last` on the closing one only, and the message names the
    packet's own source and destination."""
    cap = Capture()
    a = Conn(cap, client=("10.0.0.1", 40000), server=("10.0.0.9", 80))
    b = Conn(cap, client=("10.0.0.7", 40001), server=("10.0.0.2", 443))
    same = Conn(cap, client=("10.0.0.5", 50000), server=("10.0.0.5", 6000))
    for c in (a, b, same):
        c.handshake()
    a.client(b"one")
    b.client(b"two")
    same.server(b"three")
    a.server(b"four")
    closing = set(a.close()[1:2]) | set(same.close()[1:2])
    closing.add(b._pkt(True, RST))
    b.client_ack()  # after its RST: still the flow's, not `first` again
    recs = _records(cap.write(tmp_path / "f.pcap"), run_id)
    seen: set[str] = set()
    for rec in recs:
        num, ip, tcp = rec["pcap"]["num"], rec["ip"], rec["tcp"]
        fid = rec["flow"]["id"]
        got = [(k, list(rec[k].items())) for k in ("flow", LABELS, OPERATION)]
        assert got == _envelope(rec, fid not in seen, num in closing, run_id), num
        seen.add(fid)
        ends = f"{ip['src']}:{tcp['sport']} > {ip['dst']}:{tcp['dport']}"
        assert rec["message"].startswith(f"#{num} TCP {ends} "), rec["message"]
    assert len(seen) == 3
    # written out, the records are what they were when each was made
    lines = [orjson.loads(orjson.dumps(r)) for r in recs]
    assert [r[OPERATION].get("last", False) for r in lines].count(True) == len(closing)


def test_direction_copy_agrees_on_equal_addresses_and_ports():
    """The copy of `direction` in `Translator._tcp` is this expression."""
    for src, sport, dst, dport in [
        ("10.0.0.1", 1, "10.0.0.2", 2),
        ("10.0.0.2", 2, "10.0.0.1", 1),
        ("10.0.0.5", 6000, "10.0.0.5", 50000),
        ("10.0.0.5", 50000, "10.0.0.5", 6000),
        ("10.0.0.5", 7, "10.0.0.5", 7),
        ("2001:db8::1", 443, "10.0.0.1", 80),
    ]:
        inline = 0 if src < dst or (src == dst and sport < dport) else 1
        assert inline == direction(src, sport, dst, dport)
