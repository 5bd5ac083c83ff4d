"""translate's bounded backlog (sidecar/shed.py): a slow translate sheds records, counted,
never blocks its input, and every packet is either a record or inside a WARNING's span."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import threading
import time

import pytest

from conftest import PCAPTOOL, pcaptool_env
from pcaptool.capfile.reader import CaptureReader
from pcaptool.errors import UsageError
from pcaptool.sidecar.shed import Backlog, Shed, parse_size


def udp_capture(count: int, payload: int = 200) -> bytes:
    """A pcap of `count` Ethernet/IPv4/UDP packets, each numbered in its payload."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for n in range(count):
        body = struct.pack(">I", n) + b"x" * (payload - 4)
        udp = struct.pack(">HHHH", 40000, 9999, 8 + len(body), 0) + body
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))  # fmt: skip
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp
        out.append(
            struct.pack("<IIII", 1_700_000_000 + n // 1000, n % 1000, len(frame), len(frame))
        )
        out.append(frame)
    return b"".join(out)


def test_a_fast_consumer_sheds_nothing():
    data = udp_capture(2000)
    items = list(Backlog(CaptureReader(io.BytesIO(data)), 1 << 20))
    assert len(items) == 2000
    assert not any(type(i) is Shed for i in items)


def test_a_slow_consumer_sheds_in_runs_and_every_packet_is_accounted_for():
    count = 5000
    data = udp_capture(count)
    backlog = Backlog(CaptureReader(io.BytesIO(data)), 20_000)  # ~80 packets
    numbers, sheds = [], []
    for item in backlog:
        if type(item) is Shed:
            sheds.append(item)
        else:
            numbers.append(struct.unpack(">I", item.data[42:46])[0] + 1)
            time.sleep(0.0002)
    spans = {n for s in sheds for n in range(s.first, s.last + 1)}
    assert sheds, "the consumer was slow: something must have been shed"
    assert sum(s.count for s in sheds) == len(spans) == backlog.shed_packets
    assert sorted(numbers + sorted(spans)) == list(range(1, count + 1))
    assert numbers == sorted(numbers)  # order kept
    assert all(s.count == s.last - s.first + 1 for s in sheds)  # a run is contiguous


def test_the_input_is_drained_while_the_consumer_is_stuck():
    """The writer of the input never waits for the consumer (the pipe is read at once)."""
    import os

    count = 3000
    data = udp_capture(count)
    r, w = os.pipe()
    backlog = Backlog(CaptureReader(os.fdopen(r, "rb")), 50_000)
    done = threading.Event()

    def writer():
        with os.fdopen(w, "wb") as f:
            f.write(data)  # ~700 kB: far beyond the pipe's 64 kB if nobody read it
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    it = iter(backlog)
    first = next(it)  # the consumer takes one packet and then stalls
    assert done.wait(10), "the writer blocked: the backlog did not drain its input"
    rest = list(it)
    kept = 1 + sum(1 for i in rest if type(i) is not Shed)
    shed = sum(i.count for i in rest if type(i) is Shed)
    assert first and kept + shed == count and shed > 0


def test_a_broken_input_ends_with_its_error_after_the_packets():
    data = udp_capture(10)[:-50]
    items = []
    with pytest.raises(Exception, match="cut short"):
        for item in Backlog(CaptureReader(io.BytesIO(data)), 1 << 20):
            items.append(item)
    assert len(items) == 9


@pytest.mark.parametrize(
    "text, value",
    [("0", 0), ("4096", 4096), ("512K", 512 << 10), ("32M", 32 << 20), ("1GiB", 1 << 30)],
)
def test_sizes(text, value):
    assert parse_size(text) == value


def test_bad_size_is_a_usage_error():
    with pytest.raises(UsageError):
        parse_size("lots")


def test_translate_backlog_on_a_pipe_with_a_slow_reader(tmp_path):
    """End to end: translate --backlog fed from a pipe, its output read slowly."""
    count = 20000
    data = udp_capture(count)
    proc = subprocess.Popen(
        [*PCAPTOOL, "translate", "--backlog", "256K", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=pcaptool_env(),
    )  # fmt: skip
    feed_done = threading.Event()

    def feed():
        proc.stdin.write(data)
        proc.stdin.close()
        feed_done.set()

    threading.Thread(target=feed, daemon=True).start()
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if len(lines) < 200:
            time.sleep(0.005)  # a stalled consumer at the start: ~1 s
    assert proc.wait(60) == 0
    assert feed_done.is_set()
    packets = [r for r in lines if "shed" not in r]
    warnings = [r for r in lines if "shed" in r]
    assert warnings and all(r["severity"] == "WARNING" for r in warnings)
    shed = sum(r["shed"]["packets"] for r in warnings)
    assert len(packets) + shed == count
    nums = sorted([r["pcap"]["num"] for r in packets] + [
        n for r in warnings for n in range(r["shed"]["first"], r["shed"]["last"] + 1)
    ])  # fmt: skip
    assert nums == list(range(1, count + 1))


def test_the_warning_record_is_a_valid_record():
    import jsonschema

    from conftest import REPO
    from pcaptool.translate.serial import Translator

    schema = json.loads((REPO / "pcaptool" / "schema" / "record.schema.json").read_text())
    data = udp_capture(3)
    pkts = list(CaptureReader(io.BytesIO(data)))
    shed = Shed(2, pkts[1])
    shed.add(3, pkts[2])
    rec = shed.record(Translator("-"))
    jsonschema.validate(rec, schema)
    assert rec["shed"] == {"packets": 2, "first": 2, "last": 3, "bytes": 2 * len(pkts[1].data)}
    assert rec["severity"] == "WARNING" and rec["message"].startswith("#2-#3 2 packet(s)")
