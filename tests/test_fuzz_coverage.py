"""A bounded coverage-guided fuzz run (atheris) over packet -> record, in every test run.

PCAPTOOL_FUZZ_SECONDS sets the budget (default 60). The seeds are the decoder test
packets (tests/packets.py) and the golden captures; the run must end without a crash,
and the number of inputs it ran is printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fragcap import frag4, frag6, udp
from packets import CASES, eth

from conftest import pcaptool_env
from pcaptool.capfile.reader import LINKTYPE_ETHERNET

atheris = pytest.importorskip("atheris")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SECONDS = int(os.environ.get("PCAPTOOL_FUZZ_SECONDS", "60"))
_DATA = udp(53, 40000, bytes(range(256)) * 2)
FRAGMENT_SEEDS = [
    [eth(f) for f in frag4(_DATA, 17, [(256, 400, False), (0, 264, True), (0, 64, True)])],
    [eth(f, 0x86DD) for f in frag6(_DATA, 17, [(0, 200, True), (200, 400, False)])],
]


def test_coverage_guided_fuzzing_finds_no_crash(tmp_path: Path) -> None:
    from fuzz_translate import encode

    seeds = tmp_path / "corpus"
    seeds.mkdir()
    for i, (_name, linktype, frame) in enumerate(CASES):
        (seeds / f"case{i}").write_bytes(encode(linktype, [frame, frame[::-1][:40], frame]))
    for i, frames in enumerate(FRAGMENT_SEEDS):  # IP fragments: reassembly state across packets
        (seeds / f"frag{i}").write_bytes(encode(LINKTYPE_ETHERNET, frames))
    for i, capture in enumerate(sorted((HERE / "golden").glob("*.pcap*"))):
        if not capture.name.endswith(".gz"):
            (seeds / f"golden{i}").write_bytes(b"\x01" + capture.read_bytes())
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_translate.py"),
            str(seeds),
            f"-max_total_time={SECONDS}",
            "-max_len=4096",
            "-timeout=20",
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 240,
        env=pcaptool_env(),
    )
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
    coverage = re.findall(r"cov: (\d+)", proc.stderr)
    print(
        f"\natheris: {runs.group(1) if runs else '?'} inputs in {SECONDS} s, "
        f"coverage {coverage[-1] if coverage else '?'} edges"
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert runs and int(runs.group(1)) > 100
