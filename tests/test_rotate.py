"""`pcaptool rotate` as a real process: time, size, new streams, names, tmp+rename, keep."""

from __future__ import annotations

import contextlib
import io
import os
import re
import selectors
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CORPUS, PCAPTOOL, corpus_files, pcaptool_env, run_pcaptool
from pcaptool.capfile.reader import CaptureReader, PcapngWriter, PcapWriter, read_packets
from pcaptool.errors import CaptureFormatError
from pcaptool.sidecar.rotate import PART_RE, CaptureFramer, part_extension

T0 = 1_764_000_000_000_000_000  # 2025-11-24, integer ns
NAME_RE = re.compile(r"^part__[A-Za-z0-9.+_-]+__\d{8}T\d{6}(_\d{4})?\.(pcap|pcapng|json)$")


def http_packet(i: int, size: int = 200) -> bytes:
    """An Ethernet/IPv4/TCP frame with an HTTP-ish payload, distinct per i."""
    payload = (f"GET /item/{i} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode() * 20)[:size]
    return bytes(14 + 20 + 20) + payload


def pcap_bytes(n: int, start: int = 0, nanosecond: bool = True, size: int = 200) -> bytes:
    out = io.BytesIO()
    w = PcapWriter(out, 1, nanosecond=nanosecond)
    for i in range(start, start + n):
        w.write(T0 + i * 1000, http_packet(i, size))
    return out.getvalue()


def pcapng_bytes(n: int, start: int = 0, names=("eth0",)) -> bytes:
    out = io.BytesIO()
    w = PcapngWriter(out)
    ids = [w.add_interface(1, name=name) for name in names]
    for i in range(start, start + n):
        w.write(ids[i % len(ids)], T0 + i * 1000, http_packet(i))
    return out.getvalue()


def packets_of(data_or_path) -> list[tuple]:
    if isinstance(data_or_path, bytes):
        data_or_path = io.BytesIO(data_or_path)
    return [(p.ts_ns, p.wirelen, p.data, p.linktype) for p in read_packets(data_or_path)]


def parts_of(stdout: bytes) -> list[Path]:
    return [Path(line) for line in stdout.decode().splitlines()]


def tshark_count(path: Path) -> int:
    """Packets as tshark counts them: frames that have an encapsulation.

    tshark (4.0) also shows a pcapng Custom Block (0xBAD, and 0x40000BAD) as a frame, of
    protocol "data" with no interface and no encapsulation; it holds no packet, so it is
    not counted (see docs/agreement.md).
    """
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.encap_type"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return sum(1 for line in out.stdout.splitlines() if line.strip())


def wait_for(cond, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


class LiveRotate:
    """`pcaptool rotate` with a pipe we write to at our own pace; its stdout read by line."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [*PCAPTOOL, "rotate", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=pcaptool_env(),
        )
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def line(self, timeout: float) -> tuple[Path | None, float]:
        """The next printed path and when it came (monotonic), or None after timeout."""
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not self._sel.select(left):
                return None, time.monotonic()
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return None, time.monotonic()
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return Path(line.decode()), time.monotonic()

    def finish(self, timeout: float = 30) -> tuple[int, list[Path], bytes]:
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.stdin = None  # closed already: communicate() must not flush it
        rest, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, parts_of(self._buf + rest), err


def test_part_closes_on_time_with_no_packets_arriving(tmp_path):
    live = LiveRotate("--dir", str(tmp_path), "--every", "1")
    try:
        data = pcap_bytes(5)
        live.write(data)
        wait_for(lambda: any(tmp_path.glob(".part__*.tmp")))
        t_open = time.monotonic()  # (within the 20 ms polling step)
        path, t_printed = live.line(timeout=10)
        # stdin is still open and silent: the part was closed by the timer alone
        assert path is not None, live.proc.stderr.read1() if live.proc.poll() else "no part"
        assert 0.8 <= t_printed - t_open <= 4.0
        assert packets_of(path) == packets_of(data)
        assert tshark_count(path) == 5
        # nothing more is printed while nothing arrives (no empty parts)
        assert live.line(timeout=1.5)[0] is None
        more = pcap_bytes(3, start=5)
        live.write(more[24:])  # records only: the stream goes on
        path2, _ = live.line(timeout=10)
        assert path2 is not None and path2 != path
        assert packets_of(path2) == packets_of(more)
    finally:
        rc, rest, err = live.finish()
    assert rc == 0, err
    assert rest == []


def test_max_bytes_splits_and_concatenation_equals_input(tmp_path):
    data = pcap_bytes(300)
    res = run_pcaptool(
        "rotate", "--dir", str(tmp_path), "--every", "60", "--max-bytes", "10000", input=data
    )
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    assert len(parts) >= 300 * 270 // 10000
    for part in parts:
        assert part.stat().st_size <= 10000
        assert part.read_bytes()[:24] == data[:24]  # the input's own header, byte for byte
    merged = b"".join(p.read_bytes()[24:] for p in parts)
    assert data[:24] + merged == data  # records copied byte for byte, nothing lost or doubled
    assert sum(tshark_count(p) for p in parts) == 300


def test_names_unique_and_sorted_by_time(tmp_path):
    data = pcap_bytes(200)
    res = run_pcaptool(
        "rotate", "--dir", str(tmp_path), "--max-bytes", "3000", "--iface", "eth0", input=data
    )
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    names = [p.name for p in parts]
    assert len(names) > 10 and len(set(names)) == len(names)
    assert all(NAME_RE.match(n) for n in names), names
    assert all(n.startswith("part__eth0__") for n in names)
    assert sorted(names) == names  # printed (= time) order is name order
    # and that order is the packet order
    firsts = [packets_of(p)[0][0] for p in sorted(parts)]
    assert firsts == sorted(firsts)
    assert sorted(os.listdir(tmp_path)) == names  # no temporary files left


def test_new_stream_on_the_same_input_starts_a_new_part(tmp_path):
    streams = [pcap_bytes(4), pcapng_bytes(3, 4, names=("eth1",)), pcap_bytes(2, 7, False)]
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=b"".join(streams))
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    assert [p.suffix for p in parts] == [".pcap", ".pcapng", ".pcap"]
    assert "__eth1__" in parts[1].name and "__any__" in parts[0].name
    for part, stream in zip(parts, streams, strict=True):
        assert part.read_bytes() == stream
        assert tshark_count(part) == len(packets_of(stream))


def test_pcapng_part_starts_with_shb_and_every_idb(tmp_path):
    data = pcapng_bytes(40, names=("eth0", "eth1"))
    res = run_pcaptool("rotate", "--dir", str(tmp_path), "--max-bytes", "3000", input=data)
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    assert len(parts) > 2
    framer = CaptureFramer()
    events = list((kind, bytes(b)) for kind, b in framer.feed(data))
    head = b"".join(b for kind, b in events if kind != "record")
    for part in parts:
        assert "__eth0+eth1__" in part.name
        assert part.read_bytes().startswith(head)
        assert tshark_count(part) == len(packets_of(part))
    merged = [pkt for p in parts for pkt in packets_of(p)]
    assert merged == packets_of(data)


@pytest.mark.parametrize(
    ("fmt", "configured", "expected"),
    [
        ("pcap", None, "pcap"),
        ("pcapng", None, "pcapng"),
        ("pcapng", ".pcap", "pcap"),
        ("pcap", "pcap,json", "pcap"),
        ("pcap", "json,cap", "cap"),
        ("pcap", "a/b", "pcap"),
        ("ndjson", "pcap", "json"),
    ],
)
def test_part_extension(fmt, configured, expected):
    assert part_extension(fmt, configured) == expected


def test_ext_from_pcap_file_ext(tmp_path):
    env = pcaptool_env() | {"PCAP_FILE_EXT": "cap", "PCAP_IFACE": "eth"}
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=pcap_bytes(3), env=env)
    assert res.returncode == 0, res.stderr
    [part] = parts_of(res.stdout)
    assert part.name.startswith("part__eth__") and part.suffix == ".cap"


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_parts_merge_back_to_the_input(path, tmp_path):
    try:
        expected = packets_of(path)
    except Exception:
        pytest.skip("a broken capture (tested separately)")
    if path.name.endswith(".gz"):
        pytest.skip("rotate reads a raw stream; compressed files go through open_input")
    res = run_pcaptool(
        "rotate", "--dir", str(tmp_path), "--max-bytes", "2048", input=path.read_bytes()
    )
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    if not expected:
        assert parts == []  # a capture without packets writes no part
        return
    merged = [pkt for p in parts for pkt in packets_of(p)]
    assert merged == expected
    # mergecap -a (concatenate) as an independent oracle
    out = tmp_path / "merged.pcapng"
    subprocess.run(
        ["mergecap", "-a", "-w", str(out), *map(str, parts)], check=True, capture_output=True
    )
    assert tshark_count(out) == len(expected)


def test_truncated_input_keeps_what_came_before(tmp_path, corpus):
    data = (CORPUS / "dpkt-truncated-file.pcap").read_bytes()
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=data)
    assert res.returncode == 1
    err = res.stderr.decode()
    assert err.startswith("pcaptool: error:") and "Traceback" not in err
    [part] = parts_of(res.stdout)
    assert len(packets_of(part)) == 1


def test_unsupported_pcapng_version_ends_after_the_good_section(tmp_path, corpus):
    data = (CORPUS / "gopacket-pcapng-bad-shb-version.pcapng").read_bytes()
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=data)
    assert res.returncode == 1
    assert res.stderr.decode().count("\n") == 1 and "unsupported version 2.0" in res.stderr.decode()
    [part] = parts_of(res.stdout)
    assert len(packets_of(part)) == 1 and tshark_count(part) == 1


def test_not_a_capture_is_one_line_error(tmp_path):
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=b"hello world, not a pcap\n")
    assert res.returncode == 1
    assert res.stderr.decode().count("\n") == 1 and "not a pcap" in res.stderr.decode()
    assert res.stdout == b""


def test_bad_flags_are_usage_errors(tmp_path):
    res = run_pcaptool("rotate", "--dir", str(tmp_path), "--every", "0", input=b"")
    assert res.returncode == 2 and b"--max-bytes" in res.stderr
    res = run_pcaptool("rotate", "--dir", str(tmp_path), "--format", "xml", input=b"")
    assert res.returncode == 2


def test_keep_is_a_ring_buffer(tmp_path):
    old = tmp_path / "part__eth0__20200101T000000.pcap"  # left by an earlier run
    old.write_bytes(pcap_bytes(1))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not a part")
    data = pcap_bytes(100)
    res = run_pcaptool(
        "rotate",
        "--dir",
        str(tmp_path),
        "--max-bytes",
        "3000",
        "--keep",
        "3",
        "--iface",
        "eth0",
        input=data,
    )
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    assert len(parts) > 5
    left = sorted(p for p in tmp_path.iterdir() if PART_RE.match(p.name))
    assert left == parts[-3:]
    assert not old.exists() and unrelated.exists()


def test_no_reader_ever_sees_half_a_part(tmp_path):
    """Watch the directory while parts are written: every visible part is already final."""
    seen: dict[str, int] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for entry in os.scandir(tmp_path):
                if not entry.name.startswith("."):
                    seen.setdefault(entry.name, entry.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    live = LiveRotate("--dir", str(tmp_path), "--max-bytes", "20000", "--every", "60")
    try:
        live.write(pcap_bytes(1, 0))
        printed = 0
        for i in range(1, 400):
            live.write(pcap_bytes(1, i)[24:])
            path, _ = live.line(timeout=0.01)
            if path is not None:
                # when its path is printed the part is complete and readable
                printed += 1
                assert len(packets_of(path)) == (20000 - 24) // (16 + len(http_packet(0)))
    finally:
        rc, rest, err = live.finish()
        stop.set()
        watcher.join()
    assert rc == 0, err
    per_part = (20000 - 24) // (16 + len(http_packet(0)))
    assert printed + len(rest) == -(-400 // per_part)
    assert seen
    for name, size in seen.items():
        assert (tmp_path / name).stat().st_size == size, name


def test_sigterm_closes_the_last_part_and_exits_0(tmp_path):
    live = LiveRotate("--dir", str(tmp_path), "--every", "3600", "--drain-timeout", "0.5")
    data = pcap_bytes(7)
    live.write(data)
    wait_for(lambda: any(tmp_path.glob(".part__*.tmp")))  # running, part open
    live.proc.send_signal(signal.SIGTERM)
    path, _ = live.line(timeout=10)
    assert path is not None
    assert live.proc.wait(timeout=10) == 0
    assert packets_of(path) == packets_of(data)
    live.finish()


def test_empty_stream_writes_no_part(tmp_path):
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=pcap_bytes(0))
    assert res.returncode == 0 and res.stdout == b""
    res = run_pcaptool("rotate", "--dir", str(tmp_path), input=b"")
    assert res.returncode == 0 and res.stdout == b""
    assert list(tmp_path.iterdir()) == []


def test_ndjson_parts(tmp_path):
    lines = [f'{{"severity":"INFO","message":"packet {i}","n":{i}}}\n' for i in range(500)]
    data = "".join(lines).encode()[:-1]  # the last line without its newline
    res = run_pcaptool(
        "rotate",
        "--dir",
        str(tmp_path),
        "--format",
        "ndjson",
        "--max-bytes",
        "4000",
        "--iface",
        "eth0",
        input=data,
    )
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    assert len(parts) > 3
    assert all(p.suffix == ".json" and NAME_RE.match(p.name) for p in parts)
    chunks = [p.read_text() for p in parts]
    assert all(c.endswith("\n") and len(c) <= 4000 for c in chunks)
    assert "".join(chunks) == "".join(lines)  # whole lines, none split across parts


def test_ndjson_part_closes_on_time(tmp_path):
    live = LiveRotate("--dir", str(tmp_path), "--format", "ndjson", "--every", "1")
    try:
        live.write(b'{"message":"a"}\n{"message":"b"}\n')
        path, _ = live.line(timeout=10)
        assert path is not None and path.read_text() == '{"message":"a"}\n{"message":"b"}\n'
    finally:
        rc, _, err = live.finish()
    assert rc == 0, err


def test_framer_fed_byte_by_byte_equals_reader(tmp_path):
    data = pcap_bytes(5) + pcapng_bytes(4, names=("a", "b")) + pcap_bytes(3, 9, False)
    framer = CaptureFramer()
    units = []
    for i in range(len(data)):
        units += [(kind, bytes(b)) for kind, b in framer.feed(data[i : i + 1])]
    framer.close()
    assert b"".join(b for _, b in units) == data
    reader = CaptureReader(io.BytesIO(data))
    assert sum(1 for kind, _ in units if kind == "record") == sum(1 for _ in reader)
    assert framer.section == reader.section == 2


@pytest.mark.parametrize("name", ["rotate", "compress"])
def test_docs_page_names_every_option_and_env_var(name):
    import typer

    from pcaptool.cli import app

    command = typer.main.get_command(app).commands[name]
    page = (Path(__file__).parent.parent / "docs" / f"{name}.md").read_text()
    for param in command.params:
        names = [*param.opts, *param.secondary_opts]
        if param.envvar:
            names.append(param.envvar)
        for opt in names:
            if opt not in ("-h", "--help") and param.param_type_name == "option":
                assert f"`{opt}" in page or f"{opt}`" in page or f"/{opt}" in page, opt


def test_a_directory_that_cannot_be_used_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_pcaptool("rotate", "--dir", str(blocker / "sub"), input=pcap_bytes(2))
    assert res.returncode == 1
    assert res.stderr.decode().splitlines() == [
        f"pcaptool: error: cannot use directory {blocker / 'sub'}: Not a directory"
    ]


def test_terminal_stdin_is_refused(tmp_path):
    import pty

    primary, secondary = pty.openpty()
    try:
        res = run_pcaptool("rotate", "--dir", str(tmp_path), stdin=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert res.returncode == 2 and b"no input" in res.stderr


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"", pcap_bytes(0), pcapng_bytes(0, names=("e",))]),
    st.binary(max_size=600),
    st.integers(1, 64),
)
def test_framer_never_crashes_on_any_bytes(head, tail, step):
    data = head + tail  # a valid header then anything, or anything at all
    framer = CaptureFramer()
    with contextlib.suppress(CaptureFormatError):
        for i in range(0, len(data), step):
            for _ in framer.feed(data[i : i + step]):
                pass
        framer.close()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=40))
def test_framer_units_do_not_depend_on_how_bytes_arrive(cuts):
    data = pcapng_bytes(6, names=("x",)) + pcap_bytes(5, 6, False)
    whole = [(k, bytes(b)) for k, b in CaptureFramer().feed(data)]
    framer, pieces, pos = CaptureFramer(), [], 0
    for cut in cuts:
        pieces += [(k, bytes(b)) for k, b in framer.feed(data[pos : pos + cut])]
        pos += cut
    pieces += [(k, bytes(b)) for k, b in framer.feed(data[pos:])]
    framer.close()
    assert pieces == whole


def test_sigterm_with_input_that_never_ends_stops_after_the_drain_timeout(tmp_path):
    live = LiveRotate("--dir", str(tmp_path), "--every", "3600", "--drain-timeout", "1")
    stop = threading.Event()

    def flood():
        with contextlib.suppress(BrokenPipeError, ValueError, OSError):
            live.write(pcap_bytes(1))
            i = 1
            while not stop.is_set():
                live.write(pcap_bytes(50, i)[24:])
                i += 50

    feeder = threading.Thread(target=flood)
    feeder.start()
    try:
        wait_for(lambda: any(tmp_path.glob(".part__*.tmp")))
        live.proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        path, _ = live.line(timeout=20)
        assert live.proc.wait(timeout=20) == 0, live.proc.stderr.read()
        assert time.monotonic() - t < 10
    finally:
        stop.set()
        feeder.join()
    assert path is not None and len(packets_of(path)) > 0


def _block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) & 3)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def test_pcapng_other_blocks_are_copied_where_they_fall(tmp_path):
    """Name resolution and interface statistics blocks stay in the byte stream: the
    parts, less their repeated SHB+IDB head, concatenate to the input exactly."""
    head = pcapng_bytes(0, names=("eth0",))
    name = b"ptrot.test\0"  # an IPv4 record (type 1), padded, then the end record
    record = struct.pack("<HH", 1, 4 + len(name)) + bytes([10, 0, 0, 1]) + name
    nrb = _block(4, record + bytes(-len(record) & 3) + struct.pack("<HH", 0, 0))
    isb = _block(5, struct.pack("<III", 0, 0, 0))
    body = nrb
    for i in range(30):
        body += pcapng_bytes(1, i, names=("eth0",))[len(head) :]
        if i % 10 == 9:
            body += isb
    data = head + body
    res = run_pcaptool("rotate", "--dir", str(tmp_path), "--max-bytes", "2500", input=data)
    assert res.returncode == 0, res.stderr
    parts = parts_of(res.stdout)
    assert len(parts) > 3
    contents = [p.read_bytes() for p in parts]
    assert all(c.startswith(head) for c in contents)
    assert b"".join(c[len(head) :] for c in contents) == body
    assert contents[0][len(head) :].startswith(nrb)  # held until the first part opened
    for part in parts:
        assert tshark_count(part) == len(packets_of(part))
