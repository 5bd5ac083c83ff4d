"""Every command exits 0, quietly, when the reader of its stdout has gone (`… | head`).

The reader is gone before the command writes its first byte (a pipe whose read end is
already closed), so the command always meets the closed pipe: no race with `head`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import PCAPTOOL, pcaptool_env

GOLDEN = Path(__file__).resolve().parent / "golden"


def run_into_closed_pipe(*args: str, stdin: bytes | None = None, cwd: Path | None = None):
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [*PCAPTOOL, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=write,
            stderr=subprocess.PIPE,
            env=pcaptool_env(),
            cwd=cwd,
            timeout=120,
        )
    finally:
        os.close(write)
    return proc.returncode, proc.stderr.decode()


def parts_dir(tmp: Path, n: int = 3) -> Path:
    d = tmp / "parts"
    d.mkdir()
    for i in range(n):
        (d / f"part__eth0__2026010{i}T000000.pcap").write_bytes(
            (GOLDEN / "dns_tls.pcap").read_bytes()
        )
    return d


CASES = {
    "help": lambda t: (["--help"], None),
    "version": lambda t: (["--version"], None),
    "translate --help": lambda t: (["translate", "--help"], None),
    "translate": lambda t: (["translate", str(GOLDEN / "dns_tls.pcap")], None),
    "translate --pretty": lambda t: (["translate", "--pretty", str(GOLDEN / "dns_tls.pcap")], None),
    "translate --workers 2": lambda t: (["translate", "--workers", "2", str(GOLDEN / "dns_tls.pcap")], None),
    "capture --print-filter": lambda t: (["capture", "--print-filter"], None),
    "merge --list": lambda t: (["merge", "--list", str(parts_dir(t))], None),
    "merge -o -": lambda t: (["merge", "-o", "-", str(parts_dir(t))], None),
    "rotate": lambda t: (["rotate", "--dir", str(t / "r")], (GOLDEN / "dns_tls.pcap").read_bytes()),
    "compress": lambda t: (["compress", "-q", str(parts_dir(t) / "part__eth0__20260100T000000.pcap")], None),
    "upload": lambda t: (["upload", "-q", "--dest", str(t / "d"), "--prefix", "p", str(parts_dir(t) / "part__eth0__20260100T000000.pcap")], None),
    "schedule --check": lambda t: (["schedule", "--check", "--cron", "@hourly"], None),
    "healthcheck --help": lambda t: (["healthcheck", "serve", "--help"], None),
    "schema": lambda t: (["schema"], None),
    "query": lambda t: (["query", "-F", "csv", "SELECT * FROM packets", str(GOLDEN / "dns_tls.pcap")], None),
    "report": lambda t: (["report", "-q", str(GOLDEN / "dns_tls.pcap")], None),
    "relay": lambda t: (["relay", "-q", "--", *PCAPTOOL, "translate", "-"], (GOLDEN / "dns_tls.pcap").read_bytes()),
    "stream --help": lambda t: (["stream", "--help"], None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_closed_stdout_exits_0_quietly(case: str, tmp_path: Path) -> None:
    args, stdin = CASES[case](tmp_path)
    code, err = run_into_closed_pipe(*args, stdin=stdin)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, (
        err
    )
    assert code == 0, err


def test_every_command_is_covered() -> None:
    import typer

    from pcaptool.cli import app

    names = set(typer.main.get_command(app).commands)
    covered = {case.split()[0] for case in CASES}
    assert names <= covered, names - covered
