"""`pcaptool translate` as a process: exit codes, stderr, pipes, --pretty."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from conftest import PCAPTOOL, pcaptool_env, run_pcaptool

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_cut_short_file_writes_what_came_before_then_one_line_and_exit_1(tmp_path: Path) -> None:
    data = (GOLDEN / "arp_icmp4.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-10])
    result = run_pcaptool("translate", str(cut))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 7
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("pcaptool: error: cut.pcap: file cut short")


def test_not_a_capture_is_one_line_exit_1(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n")
    result = run_pcaptool("translate", str(junk))
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().count("\n") == 1
    assert "not a pcap or pcapng capture" in result.stderr.decode()


def test_missing_file_is_one_line_and_the_other_inputs_still_translate(tmp_path: Path) -> None:
    result = run_pcaptool("translate", str(tmp_path / "nope.pcap"), str(GOLDEN / "raw.pcap"))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 2
    assert "cannot open" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_num_restarts_per_input() -> None:
    result = run_pcaptool("translate", str(GOLDEN / "raw.pcap"), str(GOLDEN / "loop.pcap"))
    nums = [
        (r["pcap"]["file"], r["pcap"]["num"]) for r in map(json.loads, result.stdout.splitlines())
    ]
    assert nums == [("raw.pcap", 1), ("raw.pcap", 2), ("loop.pcap", 1)]


def test_closed_pipe_exits_quietly() -> None:
    # `pcaptool translate big.pcap | head -1`: no traceback, no complaint.
    big = (GOLDEN / "arp_icmp4.pcap").read_bytes()
    body = big[24:]
    data = big + body * 2000
    proc = subprocess.Popen(
        [*PCAPTOOL, "translate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    head = subprocess.Popen(["head", "-1"], stdin=proc.stdout, stdout=subprocess.PIPE)
    proc.stdout.close()
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    first = head.communicate(timeout=60)[0]
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert json.loads(first)["pcap"]["num"] == 1
    assert err == b""


def test_live_pipe_output_arrives_before_the_input_ends() -> None:
    """capture | translate: each record is flushed while the writer still holds the pipe open."""
    data = (GOLDEN / "dns_tls.pcap").read_bytes()
    proc = subprocess.Popen(
        [*PCAPTOOL, "translate"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    proc.stdin.write(data)
    proc.stdin.flush()
    line = proc.stdout.readline()  # would hang if output waited for end of input
    assert json.loads(line)["pcap"]["num"] == 1
    proc.stdin.close()
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    golden = (GOLDEN / "dns_tls.ndjson").read_bytes()
    assert len(rest.splitlines()) == len(golden.splitlines()) - 1


def test_pretty_prints_indented_json() -> None:
    result = run_pcaptool("translate", "--pretty", str(GOLDEN / "raw.pcap"))
    assert result.returncode == 0
    text = result.stdout.decode()
    assert '\n  "pcap": {' in text
    assert text.count('"num"') == 2


def test_no_input_on_a_terminal_is_a_usage_error() -> None:
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [*PCAPTOOL, "translate"],
            stdin=secondary,
            capture_output=True,
            env=pcaptool_env(),
            timeout=60,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 2
    assert b"no input" in proc.stderr


def test_corrupt_gzip_is_one_line_and_keeps_what_decompressed(tmp_path: Path) -> None:
    import gzip

    data = bytearray(gzip.compress((GOLDEN / "arp_icmp4.pcap").read_bytes() * 1))
    data[len(data) // 2 :] = b"\xff" * (len(data) - len(data) // 2)
    bad = tmp_path / "bad.pcap.gz"
    bad.write_bytes(bytes(data))
    result = run_pcaptool("translate", str(bad))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "Traceback" not in err and err.count("\n") == 1
    # Deflate has no checksum per block: the bytes decoded from the corrupt half before
    # the decoder fails are used, as tshark uses them (it stops at the same bogus record
    # length); the packets before them are kept.
    assert "compressed data is corrupt or cut short" in err or "corrupt packet record" in err
    if shutil.which("tshark"):
        seen = subprocess.run(["tshark", "-r", str(bad)], capture_output=True, timeout=60)
        assert result.stdout.count(b"\n") == seen.stdout.count(b"\n") > 0
