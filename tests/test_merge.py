"""`pcaptool merge` on local parts, with mergecap, editcap and tshark as oracles."""

from __future__ import annotations

import gzip
import os
import pty
import random
import shutil
import struct
import subprocess
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORPUS, PCAPTOOL, corpus_files, pcaptool_env, run_pcaptool
from pcaptool.capfile.reader import (
    CaptureReader,
    PcapngWriter,
    PcapWriter,
    open_input,
    read_packets,
)
from pcaptool.errors import CaptureFormatError, PcapToolError
from pcaptool.merge import Part, format_ns, merge_captures, rfc3339_ns

needs_mergecap = pytest.mark.skipif(
    not (shutil.which("mergecap") and shutil.which("editcap") and shutil.which("tshark")),
    reason="needs mergecap, editcap and tshark (wireshark-common, tshark)",
)
pytestmark = needs_mergecap

# Corpus files mergecap itself refuses (cut short, unsupported section version).
BROKEN = {
    "dpkt-truncated-file.pcap",
    "gopacket-pcapng-bad-shb-version.pcapng",
}


def packets(path: Path) -> list[tuple[int, bytes, int]]:
    """(ts_ns, bytes, wire length) of every packet, read with the project's reader."""
    out = []
    try:
        for p in read_packets(path):
            out.append((p.ts_ns, p.data, p.wirelen))
    except CaptureFormatError:
        pass  # a partial merge: compare what is there
    return out


def tshark_fields(path: Path) -> list[str]:
    """An independent oracle: tshark's view of time and length of each frame."""
    res = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"],
        capture_output=True,
        check=False,
    )
    return res.stdout.decode().splitlines()


def mergecap(out: Path, inputs: list[Path], *flags: str) -> int:
    res = subprocess.run(
        ["mergecap", *flags, "-w", str(out), *map(str, inputs)], capture_output=True, check=False
    )
    return res.returncode


def merge(out: Path, inputs: list, *flags: str):
    return run_pcaptool("merge", *map(str, inputs), "-o", str(out), *flags)


def one_error_line(stderr: bytes) -> str:
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, stderr.decode()
    assert "Traceback" not in lines[0]
    return lines[0]


def write_pcap(path: Path, pkts, linktype=1, nanosecond=False, snaplen=262144) -> Path:
    with open(path, "wb") as f:
        w = PcapWriter(f, linktype, snaplen=snaplen, nanosecond=nanosecond)
        for ts, data in pkts:
            w.write(ts, data)
    return path


def gz(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return target


def good_corpus_pcaps() -> list[Path]:
    return [p for p in corpus_files() if p.name not in BROKEN]


# -- against mergecap on the corpus -------------------------------------------------------


def test_corpus_merge_equals_mergecap(corpus, tmp_path):
    inputs = good_corpus_pcaps()
    assert mergecap(tmp_path / "m.pcapng", inputs) == 0
    res = merge(tmp_path / "p.out", inputs)
    assert res.returncode == 0, res.stderr.decode()
    want = packets(tmp_path / "m.pcapng")
    assert len(want) > 4000
    assert packets(tmp_path / "p.out") == want
    # Same frames as tshark sees them (an oracle independent of pcaptool's reader).
    assert tshark_fields(tmp_path / "p.out") == tshark_fields(tmp_path / "m.pcapng")


def test_corpus_pcap_only_same_linktype_is_pcap(corpus, tmp_path):
    eth = [
        p
        for p in good_corpus_pcaps()
        if p.suffix == ".pcap" and _linktype(p) == 1 and p.name != "tcpdump-empty.pcap"
    ]
    assert len(eth) > 10
    assert mergecap(tmp_path / "m.pcap", eth) == 0
    assert merge(tmp_path / "p.pcap", eth).returncode == 0
    assert packets(tmp_path / "p.pcap") == packets(tmp_path / "m.pcap")
    reader = CaptureReader(open_input(tmp_path / "p.pcap"))
    next(iter(reader))
    assert reader.format == "pcap"
    assert reader.interfaces[0].linktype == 1


def _linktype(path: Path) -> int:
    reader = CaptureReader(open_input(path))
    for _ in reader:
        break
    return reader.interfaces[0].linktype if reader.interfaces else -1


# -- against mergecap on parts split by editcap ---------------------------------------------


@pytest.mark.parametrize(
    "split",
    [["-c", "700"], ["-i", "0.1"]],
    ids=["by-count", "by-time"],
)
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_editcap_parts_merge_back(corpus, tmp_path, split, compress):
    source = CORPUS / "zeek-http-1000-requests-ipv6.pcap.gz"
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    subprocess.run(["editcap", *split, str(source), str(parts_dir / "part.pcap")], check=True)
    parts = sorted(parts_dir.iterdir())
    assert len(parts) > 3
    if compress:
        parts = [gz(p) for p in parts]
    assert mergecap(tmp_path / "m.pcap", parts) == 0
    # the directory expands to its parts in name order
    res = merge(tmp_path / "p.pcap", [parts_dir])
    assert res.returncode == 0, res.stderr.decode()
    got = packets(tmp_path / "p.pcap")
    assert got == packets(tmp_path / "m.pcap")
    assert got == packets(source)
    assert tshark_fields(tmp_path / "p.pcap") == tshark_fields(source)


def test_glob_and_round_robin_parts_with_ties(tmp_path):
    # Interleaved parts with many equal time stamps across parts: the tie rule decides.
    rng = random.Random(3)
    original = []
    ts = 1_700_000_000_000_000_000
    for n in range(3000):
        ts += rng.choice([0, 0, 1000, 5000])  # many ties
        original.append((ts, bytes([n % 256]) * rng.choice([60, 66, 400, 1514])))
    parts = []
    for i in range(5):
        parts.append(write_pcap(tmp_path / f"rr-{i}.pcap", original[i::5]))
    # one more part whose packets all collide with the others' times
    parts.append(write_pcap(tmp_path / "rr-5.pcap", [(t, b"\xee" * 70) for t, _ in original[::7]]))
    assert mergecap(tmp_path / "m.pcap", parts) == 0
    res = merge(tmp_path / "p.pcap", [tmp_path / "rr-*.pcap"])
    assert res.returncode == 0, res.stderr.decode()
    assert packets(tmp_path / "p.pcap") == packets(tmp_path / "m.pcap")
    # the order the inputs are given matters on ties, as with mergecap
    rev = list(reversed(parts))
    assert mergecap(tmp_path / "m2.pcap", rev) == 0
    assert merge(tmp_path / "p2.pcap", rev).returncode == 0
    assert packets(tmp_path / "p2.pcap") == packets(tmp_path / "m2.pcap")
    assert packets(tmp_path / "p2.pcap") != packets(tmp_path / "p.pcap")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_out_of_order_parts_like_mergecap(tmp_path, seed):
    # Real captures are not always in time order (multi-queue NICs, merged rings);
    # mergecap then takes the earliest head each time, and so must we.
    rng = random.Random(seed)
    parts = []
    for i in range(rng.randrange(2, 7)):
        pkts = []
        ts = 10**18
        for k in range(rng.randrange(1, 400)):
            ts += rng.choice([-3000, -1000, 0, 0, 1000, 2000, 50_000])
            pkts.append((ts, bytes([i, k % 256]) * 40))
        parts.append(write_pcap(tmp_path / f"o{i}.pcap", pkts))
    assert mergecap(tmp_path / "m.pcap", parts) == 0
    assert merge(tmp_path / "p.pcap", parts).returncode == 0
    assert packets(tmp_path / "p.pcap") == packets(tmp_path / "m.pcap")
    assert merge(tmp_path / "q.pcapng", parts, "--format", "pcapng").returncode == 0
    assert packets(tmp_path / "q.pcapng") == packets(tmp_path / "m.pcap")


def test_overlapping_many_parts(tmp_path):
    # More parts than are comfortably open at once, with overlapping time ranges.
    rng = random.Random(5)
    parts = []
    for i in range(120):
        start = rng.randrange(0, 10**9)
        pkts = sorted((start + rng.randrange(0, 10**8), bytes([i]) * 60) for _ in range(20))
        parts.append(write_pcap(tmp_path / f"p{i:03d}.pcap", [(10**18 + t, d) for t, d in pkts]))
    assert mergecap(tmp_path / "m.out", parts) == 0
    assert merge(tmp_path / "p.out", parts).returncode == 0
    assert packets(tmp_path / "p.out") == packets(tmp_path / "m.out")


def test_thousand_rotated_parts_with_few_file_handles(tmp_path):
    # Rotated parts do not overlap in time: they are opened one after another, so a
    # merge of 1000 parts works under a limit of 64 open files.
    import resource

    rng = random.Random(9)
    parts, want = [], []
    ts = 1_700_000_000 * 10**9
    for i in range(1000):
        pkts = []
        for _ in range(rng.randrange(0, 4)):
            ts += rng.randrange(1, 10**6) * 1000
            pkts.append((ts, bytes([i % 256]) * rng.choice([60, 300])))
        parts.append(write_pcap(tmp_path / f"part__eth0__{i:05d}.pcap", pkts))
        want += pkts
    rng.shuffle(parts)  # the order given does not matter when times do not tie

    def limit_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    res = subprocess.run(
        [*PCAPTOOL, "merge", str(tmp_path), "-o", str(tmp_path / "out" / "all.pcap")],
        capture_output=True,
        env=pcaptool_env(),
        preexec_fn=limit_files,
        timeout=300,
        check=False,
    )
    assert res.returncode == 1  # the output directory does not exist: one line
    assert "cannot write" in one_error_line(res.stderr)
    (tmp_path / "out").mkdir()
    res = subprocess.run(
        [*PCAPTOOL, "merge", *map(str, parts), "-o", str(tmp_path / "out" / "all.pcap")],
        capture_output=True,
        env=pcaptool_env(),
        preexec_fn=limit_files,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode()
    assert [(t, d) for t, d, _ in packets(tmp_path / "out" / "all.pcap")] == want


def test_stdin_among_the_inputs(corpus, tmp_path):
    a, b = CORPUS / "zeek-http-get.pcap", CORPUS / "zeek-http-1000-requests-ipv6.pcap.gz"
    res = run_pcaptool("merge", str(a), "-", "-o", "-", input=b.read_bytes())
    assert res.returncode == 0, res.stderr.decode()
    (tmp_path / "p.pcap").write_bytes(res.stdout)
    assert mergecap(tmp_path / "m.pcap", [a, b]) == 0
    assert packets(tmp_path / "p.pcap") == packets(tmp_path / "m.pcap")


def test_append_equals_mergecap_a(corpus, tmp_path):
    inputs = [CORPUS / "zeek-icmp-ping.pcap", CORPUS / "zeek-http-get.pcap"]
    inputs += [CORPUS / "zeek-http-1000-requests-ipv6.pcap.gz", CORPUS / "zeek-http-vlan.pcap"]
    assert mergecap(tmp_path / "m.pcap", inputs, "-a") == 0
    res = merge(tmp_path / "p.pcap", inputs, "--append")
    assert res.returncode == 0, res.stderr.decode()
    got = packets(tmp_path / "p.pcap")
    assert got == packets(tmp_path / "m.pcap")
    assert got != sorted(got, key=lambda p: p[0])  # really concatenated, not merged


# -- formats, link types, resolution, snaplen ------------------------------------------------


def test_mixed_link_types_make_pcapng_with_one_interface_per_link_type(corpus, tmp_path):
    inputs = [
        CORPUS / "zeek-http-get.pcap",  # EN10MB
        CORPUS / "zeek-http-basic-auth-rawip.pcap",  # IPV4
        CORPUS / "sv-http-sll2.pcap",  # LINUX_SLL2
        CORPUS / "zeek-icmp-ping.pcap",  # EN10MB again
    ]
    assert mergecap(tmp_path / "m.out", inputs) == 0
    res = merge(tmp_path / "p.out", inputs)
    assert res.returncode == 0, res.stderr.decode()
    assert packets(tmp_path / "p.out") == packets(tmp_path / "m.out")
    reader = CaptureReader(open_input(tmp_path / "p.out"))
    seen = {(p.iface, p.linktype) for p in reader}
    assert reader.format == "pcapng"
    assert sorted(i.linktype for i in reader.interfaces) == [1, 228, 276]
    assert len(seen) == 3
    # tshark reads the encapsulation of each frame
    encaps = subprocess.run(
        ["tshark", "-r", str(tmp_path / "p.out"), "-T", "fields", "-e", "frame.interface_id"],
        capture_output=True,
        check=True,
    ).stdout.split()
    assert len(set(encaps)) == 3


def test_pcap_asked_for_mixed_link_types_is_one_line_error(corpus, tmp_path):
    inputs = [CORPUS / "zeek-http-get.pcap", CORPUS / "zeek-http-basic-auth-rawip.pcap"]
    res = merge(tmp_path / "p.pcap", inputs, "--format", "pcap")
    assert res.returncode == 2
    line = one_error_line(res.stderr)
    assert "different link types" in line and "--format pcapng" in line
    assert not (tmp_path / "p.pcap").exists()


def test_nanoseconds_kept_and_largest_snaplen(tmp_path):
    a = write_pcap(tmp_path / "a.pcap", [(10**18 + 123_456_789, b"a" * 60)], nanosecond=True)
    b = write_pcap(
        tmp_path / "b.pcap", [(10**18 + 123_456_000, b"b" * 60)], snaplen=65535, nanosecond=False
    )
    c = write_pcap(tmp_path / "c.pcap", [(10**18 + 5, b"c" * 60)], snaplen=9000, nanosecond=True)
    res = merge(tmp_path / "p.pcap", [b, c, a])
    assert res.returncode == 0, res.stderr.decode()
    raw = (tmp_path / "p.pcap").read_bytes()
    magic, _, _, _, _, snaplen, linktype = struct.unpack("<IHHiIII", raw[:24])
    assert magic == 0xA1B23C4D  # nanosecond pcap
    assert snaplen == 262144 and linktype == 1
    assert [p[0] for p in packets(tmp_path / "p.pcap")] == [
        10**18 + 5,
        10**18 + 123_456_000,
        10**18 + 123_456_789,
    ]
    assert mergecap(tmp_path / "m.pcapng", [b, c, a]) == 0
    assert tshark_fields(tmp_path / "p.pcap") == tshark_fields(tmp_path / "m.pcapng")
    # microsecond inputs only: microsecond pcap, snaplen the largest of the inputs
    d = write_pcap(tmp_path / "d.pcap", [(10**18, b"d" * 60)], snaplen=1500)
    e = write_pcap(tmp_path / "e.pcap", [(10**18 + 1000, b"e" * 60)], snaplen=9000)
    assert merge(tmp_path / "q.pcap", [d, e]).returncode == 0
    magic, *_, snaplen, _ = struct.unpack("<IHHiIII", (tmp_path / "q.pcap").read_bytes()[:24])
    assert (magic, snaplen) == (0xA1B2C3D4, 9000)


def test_pcapng_inputs_and_pcapng_output(corpus, tmp_path):
    inputs = [
        CORPUS / "zeek-http-chunked.pcapng",
        CORPUS / "gopacket-pcapng-bigendian.pcapng",
        CORPUS / "tcpdump-pptp-bigendian.pcap",
        CORPUS / "zeek-http-get-to-ssh-server-nsec.pcap",
    ]
    assert mergecap(tmp_path / "m.out", inputs) == 0
    for fmt in ("pcapng", "pcap"):
        res = merge(tmp_path / f"p.{fmt}", inputs, "--format", fmt)
        assert res.returncode == 0, res.stderr.decode()
        assert packets(tmp_path / f"p.{fmt}") == packets(tmp_path / "m.out")
        assert tshark_fields(tmp_path / f"p.{fmt}") == tshark_fields(tmp_path / "m.out")


@pytest.mark.parametrize("maker", ["pcaptool", "editcap"])
def test_pcapng_parts_like_mergecap(tmp_path, maker):
    # pcapng parts: nanosecond ones written by PcapngWriter (copied block by block) and
    # microsecond ones converted by editcap (block heads rewritten); some gzip'd, some
    # with two interfaces, time stamps tying and going backwards.
    rng = random.Random(len(maker))
    parts = []
    for i in range(5):
        pkts = []
        ts = 10**18
        for k in range(rng.randrange(50, 300)):
            ts += rng.choice([-2000, 0, 1000, 3000, 70_000])
            pkts.append((ts, k % 2 if i % 2 else 0, bytes([i, k % 256]) * rng.choice([30, 700])))
        path = tmp_path / f"n{i}.pcapng"
        if maker == "pcaptool":
            with open(path, "wb") as f:
                w = PcapngWriter(f)
                ids = [w.add_interface(1, name="eth0"), w.add_interface(1, name=f"eth{i}")]
                for t, j, data in pkts:
                    w.write(ids[j], t, data)
        else:
            pcap = write_pcap(tmp_path / f"n{i}.pcap", [(t, d) for t, _, d in pkts])
            subprocess.run(["editcap", "-F", "pcapng", str(pcap), str(path)], check=True)
            pcap.unlink()
        parts.append(gz(path) if i % 2 else path)
    assert mergecap(tmp_path / "m.pcapng", parts) == 0
    want = packets(tmp_path / "m.pcapng")
    for fmt in ("pcapng", "pcap"):
        res = merge(tmp_path / f"p.{fmt}", parts, "--format", fmt)
        assert res.returncode == 0, res.stderr.decode()
        assert packets(tmp_path / f"p.{fmt}") == want
        assert tshark_fields(tmp_path / f"p.{fmt}") == tshark_fields(tmp_path / "m.pcapng")
    reader = CaptureReader(open_input(tmp_path / "p.pcapng"))
    names = {reader.interfaces[p.iface].name for p in reader}
    assert names == ({"eth0", "eth1", "eth3"} if maker == "pcaptool" else {None})
    # with no --format, pcapng parts give pcapng (nothing is lost)
    assert merge(tmp_path / "d.out", parts).returncode == 0
    assert (tmp_path / "d.out").read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert packets(tmp_path / "d.out") == want


def test_gzip_output(corpus, tmp_path):
    inputs = [CORPUS / "zeek-http-get.pcap", CORPUS / "zeek-icmp-ping.pcap"]
    assert merge(tmp_path / "p.pcap.gz", inputs).returncode == 0
    assert (tmp_path / "p.pcap.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert mergecap(tmp_path / "m.pcap", inputs) == 0
    assert packets(tmp_path / "p.pcap.gz") == packets(tmp_path / "m.pcap")


# -- stdout ----------------------------------------------------------------------------------


def test_stdout_pipes_into_tshark(corpus, tmp_path):
    inputs = [CORPUS / "zeek-http-get.pcap", CORPUS / "zeek-icmp-vlan-arp.pcap"]
    res = run_pcaptool("merge", *map(str, inputs), "-o", "-")
    assert res.returncode == 0 and res.stderr == b""
    assert merge(tmp_path / "p.pcap", inputs).returncode == 0
    assert res.stdout == (tmp_path / "p.pcap").read_bytes()
    tshark = subprocess.run(
        ["tshark", "-r", "-", "-T", "fields", "-e", "frame.len"],
        input=res.stdout,
        capture_output=True,
        check=True,
    )
    assert len(tshark.stdout.split()) == len(packets(tmp_path / "p.pcap"))


def test_reader_going_away_is_quiet(tmp_path):
    # `pcaptool merge parts/ -o - | head -c 100`: exit 0, nothing on stderr
    big = write_pcap(
        tmp_path / "big.pcap", [(10**18 + k * 1000, b"z" * 1400) for k in range(20000)]
    )
    other = write_pcap(
        tmp_path / "other.pcap", [(10**18 + k * 1000 + 1, b"y" * 1400) for k in range(20000)]
    )
    proc = subprocess.Popen(
        [*PCAPTOOL, "merge", str(big), str(other), "-o", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    assert len(proc.stdout.read(100)) == 100
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert stderr == b""


def test_refuses_binary_to_a_terminal(corpus):
    main, child = pty.openpty()
    try:
        res = subprocess.run(
            [*PCAPTOOL, "merge", str(CORPUS / "zeek-http-get.pcap"), "-o", "-"],
            stdout=child,
            stderr=subprocess.PIPE,
            env=pcaptool_env(),
            timeout=60,
            check=False,
        )
    finally:
        os.close(child)
        os.close(main)
    assert res.returncode == 2
    assert "terminal" in one_error_line(res.stderr)


# -- inputs ----------------------------------------------------------------------------------


def test_directory_skips_hidden_and_output_file(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    write_pcap(d / "a.pcap", [(10**18, b"a" * 60)])
    write_pcap(d / "b.pcap", [(10**18 + 1000, b"b" * 60)])
    (d / ".c.pcap.tmp").write_bytes(b"half written")
    (d / ".d.pcap").write_bytes(b"a temporary")
    (d / "notes.txt").write_text("not a part")
    out = d / "all.pcap"
    assert merge(out, [d]).returncode == 0
    # rerun: all.pcap is now in the directory, it must not merge itself in
    res = merge(out, [d])
    assert res.returncode == 0, res.stderr.decode()
    assert [p[1][:1] for p in packets(out)] == [b"a", b"b"]
    # naming the output as an input is refused
    res = run_pcaptool("merge", str(d / "a.pcap"), str(out), "-o", str(out))
    assert res.returncode == 2
    assert "both an input and the output" in one_error_line(res.stderr)


def test_missing_input_and_no_output_are_one_line(tmp_path):
    res = merge(tmp_path / "p.pcap", [tmp_path / "nope.pcap"])
    assert res.returncode == 1
    assert "nope.pcap" in one_error_line(res.stderr)
    res = run_pcaptool("merge", str(tmp_path / "*.pcap"), "-o", str(tmp_path / "x"))
    assert res.returncode == 1 and "no file matches" in one_error_line(res.stderr)
    res = run_pcaptool("merge", str(tmp_path))
    assert res.returncode == 2 and "-o" in one_error_line(res.stderr)
    res = run_pcaptool("merge", str(tmp_path), "-o", "-", "--format", "xml")
    assert res.returncode == 2 and "--format" in one_error_line(res.stderr)


# -- bad parts -------------------------------------------------------------------------------


def test_truncated_part_stops_like_mergecap(corpus, tmp_path):
    inputs = [
        CORPUS / "zeek-http-get.pcap",
        CORPUS / "dpkt-truncated-file.pcap",
        CORPUS / "zeek-icmp-ping.pcap",
    ]
    assert mergecap(tmp_path / "m.pcap", inputs) != 0  # mergecap stops with an error too
    res = merge(tmp_path / "p.pcap", inputs)
    assert res.returncode == 1
    line = one_error_line(res.stderr)
    assert "dpkt-truncated-file.pcap" in line and "cut short" in line
    # what came before the break is written, the same packets mergecap wrote
    assert packets(tmp_path / "p.pcap") == packets(tmp_path / "m.pcap")


def test_skip_bad_reports_and_merges_the_rest(corpus, tmp_path):
    good = [CORPUS / "zeek-http-get.pcap", CORPUS / "zeek-icmp-ping.pcap"]
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(os.urandom(300))
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(gzip.compress((CORPUS / "zeek-http-vlan.pcap").read_bytes())[:-200])
    truncated = CORPUS / "dpkt-truncated-file.pcap"
    inputs = [good[0], junk, truncated, cut, good[1]]
    res = merge(tmp_path / "p.pcap", inputs)
    assert res.returncode == 1
    assert "junk.pcap" in one_error_line(res.stderr)

    res = merge(tmp_path / "p.pcap", inputs, "--skip-bad")
    assert res.returncode == 0, res.stderr.decode()
    warnings = res.stderr.decode().splitlines()
    assert all(w.startswith("pcaptool: warning: ") for w in warnings)
    for name in ("junk.pcap", "dpkt-truncated-file.pcap", "cut.pcap.gz"):
        assert sum(name in w for w in warnings) == 1, warnings
    assert "Traceback" not in res.stderr.decode()
    # every packet of the good parts is there, in mergecap's order
    assert mergecap(tmp_path / "m.pcap", good) == 0
    got = packets(tmp_path / "p.pcap")
    want = packets(tmp_path / "m.pcap")
    assert [p for p in got if p in want] == want
    # the packets read from the broken parts before their break are kept
    assert packets(truncated)[0] in got


def test_corrupt_gzip_middle_is_reported(corpus, tmp_path):
    # flip bytes in the middle of a gzip part's deflate stream
    plain = gzip.decompress((CORPUS / "zeek-http-1000-requests-ipv6.pcap.gz").read_bytes())
    data = bytearray(gzip.compress(plain))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    bad = tmp_path / "bad.pcap.gz"
    bad.write_bytes(bytes(data))
    res = merge(tmp_path / "p.pcap", [CORPUS / "zeek-http-get.pcap", bad])
    assert res.returncode == 1
    assert "bad.pcap.gz" in one_error_line(res.stderr)
    res = merge(tmp_path / "p.pcap", [CORPUS / "zeek-http-get.pcap", bad], "--skip-bad")
    assert res.returncode == 0
    assert "bad.pcap.gz" in res.stderr.decode() and "Traceback" not in res.stderr.decode()


def test_invalid_deflate_data_is_one_line(tmp_path):
    # a gzip header followed by a deflate block of the reserved type: isal raises its own
    # IsalError (not an OSError); merge still says it in one line
    good = write_pcap(tmp_path / "good.pcap", [(10**18, b"g" * 60)])
    bad = tmp_path / "bad.pcap.gz"
    bad.write_bytes(gzip.compress(good.read_bytes())[:10] + b"\xff" * 64)
    res = merge(tmp_path / "p.pcap", [good, bad])
    assert res.returncode == 1
    line = one_error_line(res.stderr)
    assert "bad.pcap.gz" in line and "compressed data is corrupt" in line
    res = merge(tmp_path / "p.pcap", [good, bad], "--skip-bad")
    assert res.returncode == 0 and "bad.pcap.gz" in res.stderr.decode()
    assert packets(tmp_path / "p.pcap") == packets(good)


# -- --list ----------------------------------------------------------------------------------


def test_list_local_parts(corpus, tmp_path):
    inputs = [CORPUS / "zeek-http-get.pcap", CORPUS / "zeek-http-1000-requests-ipv6.pcap.gz"]
    inputs.append(CORPUS / "dpkt-truncated-file.pcap")
    res = run_pcaptool("merge", "--list", *map(str, inputs))
    assert res.returncode == 0, res.stderr.decode()
    rows = [line.split("\t") for line in res.stdout.decode().splitlines()]
    assert rows[0][:6] == ["name", "size", "updated", "first", "last", "packets"]
    for row, path in zip(rows[1:], inputs, strict=True):
        assert row[0] == str(path)
        assert int(row[1]) == path.stat().st_size
        times = tshark_fields(path)
        first, last = times[0].split("\t")[0], times[-1].split("\t")[0]
        assert rfc3339_ns(row[3]) == _epoch_ns(first)
        assert rfc3339_ns(row[4]) == _epoch_ns(last)
        assert int(row[5]) == len(times)
    assert rows[3][6].startswith("error: ") and "cut short" in rows[3][6]
    assert not list(tmp_path.iterdir())  # nothing written


def _epoch_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 10**9 + int(frac.ljust(9, "0")[:9])


def test_time_formatting_round_trip():
    for ts in (0, 1, 1_700_000_000_123_456_789, 1_700_000_000_000_000_000):
        assert rfc3339_ns(format_ns(ts)) == ts
    assert rfc3339_ns("2024-05-01T12:00:00.5+02:00") == rfc3339_ns("2024-05-01T10:00:00.5Z")


# -- NDJSON ----------------------------------------------------------------------------------


def _record(ts_ns: int, num: int, part: int) -> dict:
    return {
        "pcap": {"num": num, "date": format_ns(ts_ns), "part": part},
        "timestamp": {"seconds": ts_ns // 10**9, "nanos": ts_ns % 10**9},
        "severity": "DEFAULT",
        "message": f"#{num} from part {part}",
    }


def _ndjson_parts(tmp_path: Path, count: int = 4) -> list[Path]:
    rng = random.Random(11)
    paths = []
    for part in range(count):
        ts = 1_700_000_000_000_000_000 + rng.randrange(0, 10**9)
        lines = []
        for num in range(1, 200):
            ts += rng.choice([0, 1, 1000, 10**6])
            lines.append(orjson.dumps(_record(ts, num, part)))
        path = tmp_path / f"part-{part}.json"
        path.write_bytes(b"\n".join(lines) + b"\n")
        paths.append(gz(path) if part % 2 else path)
    return paths


def test_ndjson_merge_orders_by_date_then_num(tmp_path):
    parts = _ndjson_parts(tmp_path)
    res = run_pcaptool("merge", str(tmp_path), "-o", "-")  # ndjson detected by the names
    assert res.returncode == 0, res.stderr.decode()
    records = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 4 * 199
    keys = [(rfc3339_ns(r["pcap"]["date"]), r["pcap"]["num"]) for r in records]
    assert keys == sorted(keys)
    # every record once, and equal keys keep input order
    expected = []
    for i, p in enumerate(parts):
        for line in open_input(p).read().splitlines():
            r = orjson.loads(line)
            expected.append(((rfc3339_ns(r["pcap"]["date"]), r["pcap"]["num"]), i, line))
    assert res.stdout.splitlines() == [line for _, _, line in sorted(expected)]
    # jq reads it as valid NDJSON
    if shutil.which("jq"):
        jq = subprocess.run(
            ["jq", "-c", ".pcap.num"], input=res.stdout, capture_output=True, check=True
        )
        assert len(jq.stdout.split()) == len(records)


def test_folder_with_captures_and_ndjson(tmp_path):
    parts = _ndjson_parts(tmp_path, 2)
    write_pcap(tmp_path / "cap.pcap", [(10**18, b"x" * 60)])
    res = run_pcaptool("merge", str(tmp_path), "-o", str(tmp_path / "out.pcap"))
    assert res.returncode == 0, res.stderr.decode()
    assert packets(tmp_path / "out.pcap") == [(10**18, b"x" * 60, 60)]
    res = run_pcaptool("merge", str(tmp_path), "--format", "ndjson", "-o", "-")
    assert res.returncode == 0, res.stderr.decode()
    assert len(res.stdout.splitlines()) == 2 * 199 and len(parts) == 2


def test_ndjson_append_and_list(tmp_path):
    parts = _ndjson_parts(tmp_path, 3)
    res = run_pcaptool("merge", "--append", *map(str, parts), "-o", "-")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.splitlines() == [
        line for p in parts for line in open_input(p).read().splitlines()
    ]
    res = run_pcaptool("merge", "--list", *map(str, parts))
    assert res.returncode == 0, res.stderr.decode()
    rows = [line.split("\t") for line in res.stdout.decode().splitlines()[1:]]
    for row, part in zip(rows, parts, strict=True):
        dates = [
            rfc3339_ns(orjson.loads(line)["pcap"]["date"])
            for line in open_input(part).read().splitlines()
        ]
        assert (row[0], int(row[5])) == (str(part), len(dates))
        assert (rfc3339_ns(row[3]), rfc3339_ns(row[4])) == (min(dates), max(dates))


def test_ndjson_bad_line(tmp_path):
    parts = _ndjson_parts(tmp_path, 2)
    bad = tmp_path / "part-9.json"
    bad.write_bytes(orjson.dumps(_record(10**18, 1, 9)) + b"\n{not json\n")
    out = tmp_path / "out.ndjson"
    res = run_pcaptool("merge", *map(str, parts), str(bad), "-o", str(out), "--format", "ndjson")
    assert res.returncode == 1
    assert "part-9.json: line 2" in one_error_line(res.stderr)
    res = run_pcaptool(
        "merge", *map(str, parts), str(bad), "-o", str(out), "--format", "ndjson", "--skip-bad"
    )
    assert res.returncode == 0
    assert "part-9.json: line 2" in res.stderr.decode()
    assert len(out.read_bytes().splitlines()) == 2 * 199 + 1


def test_ndjson_from_translate_when_available(corpus, tmp_path):
    # Real translate output, when the translate command is built on this branch.
    parts = []
    for name in ("zeek-http-get.pcap", "zeek-icmp-ping.pcap"):
        res = run_pcaptool("translate", str(CORPUS / name))
        if res.returncode != 0 or not res.stdout.startswith(b"{"):
            pytest.skip("pcaptool translate is not built on this branch yet")
        parts.append(tmp_path / f"{name}.json")
        parts[-1].write_bytes(res.stdout)
    res = run_pcaptool("merge", *map(str, parts), "-o", "-")
    assert res.returncode == 0, res.stderr.decode()
    dates = [orjson.loads(line)["pcap"]["date"] for line in res.stdout.splitlines()]
    assert [rfc3339_ns(d) for d in dates] == sorted(rfc3339_ns(d) for d in dates)


def test_pcapng_writer_interfaces_from_two_pcapng_parts(tmp_path):
    # Named interfaces of pcapng parts stay distinct; the same name/link type is shared.
    def part(path, names):
        with open(path, "wb") as f:
            w = PcapngWriter(f)
            ids = [w.add_interface(1, name=n) for n in names]
            for k, i in enumerate(ids):
                w.write(i, 10**18 + k * 1000 + len(names), bytes([k]) * 60)
        return path

    a = part(tmp_path / "a.pcapng", ["eth0", "lo"])
    b = part(tmp_path / "b.pcapng", ["eth0", "eth1", "lo"])
    res = merge(tmp_path / "p.pcapng", [a, b], "--format", "pcapng")
    assert res.returncode == 0, res.stderr.decode()
    reader = CaptureReader(open_input(tmp_path / "p.pcapng"))
    got = [(p.ts_ns, reader.interfaces[p.iface].name) for p in reader]
    assert sorted(i.name for i in reader.interfaces) == ["eth0", "eth1", "lo"]
    assert mergecap(tmp_path / "m.pcapng", [a, b]) == 0
    assert [t for t, _ in got] == [p[0] for p in packets(tmp_path / "m.pcapng")]
    assert [n for _, n in got] == ["eth0", "eth0", "lo", "eth1", "lo"]


# -- robustness ------------------------------------------------------------------------------

_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    blobs=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.binary(max_size=300).map(lambda b: _HEADER + b),
            st.binary(max_size=300).map(lambda b: gzip.compress(_HEADER + b)),
            st.binary(max_size=300).map(lambda b: gzip.compress(_HEADER + b)[: len(b) // 2]),
        ),
        min_size=1,
        max_size=4,
    ),
    skip_bad=st.booleans(),
)
def test_never_crashes_on_any_bytes(tmp_path, blobs, skip_bad):
    # Whatever the parts hold, the merge ends normally or with the project's error.
    parts = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"h{i}.pcap"
        path.write_bytes(blob)
        parts.append(Part(str(path), str(path)))
    sink = open(os.devnull, "wb")  # noqa: SIM115
    try:
        result = merge_captures(parts, lambda: sink, skip_bad=skip_bad)
        assert result.packets >= 0
    except CaptureFormatError as exc:
        assert str(exc).startswith(str(tmp_path))
    except PcapToolError as exc:
        assert "nothing to merge" in str(exc) or "link type" in str(exc)
    finally:
        sink.close()


def test_help_has_an_example():
    res = run_pcaptool("merge", "--help")
    assert res.returncode == 0
    assert b"Example:" in res.stdout and b"pcaptool merge" in res.stdout


def _mergecap_model(inputs: list[list[tuple[int, bytes]]]) -> list[tuple[int, bytes]]:
    """Wireshark's merge_read_packet(): scan every input's head, keep the last one whose
    time is <= the smallest so far (is_earlier() counts equal as earlier)."""
    heads = [0] * len(inputs)
    out = []
    while True:
        best = None
        for i, pkts in enumerate(inputs):
            if heads[i] < len(pkts) and (best is None or pkts[heads[i]][0] <= best[0]):
                best = (pkts[heads[i]][0], i)
        if best is None:
            return out
        out.append(inputs[best[1]][heads[best[1]]])
        heads[best[1]] += 1


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.lists(st.sampled_from([-2, -1, 0, 0, 0, 1, 1, 2, 5]), max_size=40),
        min_size=1,
        max_size=6,
    ),
    nanosecond=st.booleans(),
    fmt=st.sampled_from(["pcap", "pcapng"]),
)
def test_merge_order_is_mergecaps(tmp_path_factory, steps, nanosecond, fmt):
    # The batch engine sorts by a running-max key; this checks it against a model of
    # mergecap's own loop on random inputs full of ties and backward steps.
    tmp = tmp_path_factory.mktemp("order")
    unit = 1 if nanosecond else 1000
    inputs, parts = [], []
    for i, deltas in enumerate(steps):
        ts, pkts = 10**18, []
        for k, d in enumerate(deltas):
            ts += d * unit
            pkts.append((ts, bytes([i, k]) * 30))
        inputs.append(pkts)
        parts.append(
            Part(f"in{i}", str(write_pcap(tmp / f"in{i}.pcap", pkts, nanosecond=nanosecond)))
        )
    out = tmp / "out"
    with open(out, "wb") as f:
        result = merge_captures(parts, lambda: f, fmt=fmt)
    want = _mergecap_model(inputs)
    assert result.packets == len(want)
    assert [(p[0], p[1]) for p in packets(out)] == want


# -- time stamps past 2**64 ns ------------------------------------------------------------


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) & 3)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def _far_future_pcapng(path: Path, highs: list[int]) -> Path:
    """A microsecond interface (no if_tsresol) whose time stamps exceed 2**64 ns."""
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535))
    epbs = b""
    for i, hi in enumerate(highs):
        data = bytes([i]) * 60
        epbs += _block(6, struct.pack("<IIIII", 0, hi, 1000 + i, len(data), len(data)) + data)
    path.write_bytes(shb + idb + epbs)
    return path


def test_times_past_2_64_ns_keep_their_resolution_as_mergecap(tmp_path):
    far = _far_future_pcapng(tmp_path / "far.pcapng", [0xFFFFFFFF, 0xFFFFFFF0, 5])
    near = write_pcap(tmp_path / "near.pcap", [(10**18 + i, b"n" * 60) for i in range(3)])
    assert mergecap(tmp_path / "m.pcapng", [far, near]) == 0
    res = merge(tmp_path / "p.pcapng", [far, near])
    assert res.returncode == 0, res.stderr.decode()
    want = tshark_fields(tmp_path / "m.pcapng")
    seconds = [float(line.split("\t")[0]) for line in want]
    assert len(want) == 6 and sum(s > 2**64 / 1e9 for s in seconds) == 2  # not clamped
    assert tshark_fields(tmp_path / "p.pcapng") == want
    assert packets(tmp_path / "p.pcapng") == packets(tmp_path / "m.pcapng")


def test_copiable_custom_blocks_go_where_mergecap_puts_them(tmp_path):
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9))

    def epb(ts: int, tag: int) -> bytes:
        data = bytes([tag]) * 60
        return _block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, 60, 60) + data)

    def custom(btype: int, text: bytes) -> bytes:
        return _block(btype, struct.pack("<I", 32473) + text)

    t0 = 10**18
    a = tmp_path / "a.pcapng"  # leading copiable block, one that must not be copied, one later
    a.write_bytes(
        shb
        + idb
        + custom(0xBAD, b"first")
        + custom(0x40000BAD, b"not to copy")
        + epb(t0 + 50, 1)
        + custom(0xBAD, b"after the first packet")
        + epb(t0 + 70, 2)
    )
    b = write_pcap(tmp_path / "b.pcap", [(t0 + i * 20, b"b" * 60) for i in range(5)])
    assert mergecap(tmp_path / "m.pcapng", [b, a]) == 0
    res = merge(tmp_path / "p.pcapng", [b, a])
    assert res.returncode == 0, res.stderr.decode()
    want = tshark_fields(tmp_path / "m.pcapng")
    assert len(want) == 9  # 7 packets and the two copiable blocks
    assert tshark_fields(tmp_path / "p.pcapng") == want
