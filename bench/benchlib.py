"""Helpers shared by the translate benchmarks: the capture, a timed run, a packet count."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def run(cmd: list[str], extra_env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (with waited-for workers) and peak RSS (KiB) of `cmd`,
    run with the environment and `extra_env`.

    The commands run with pcaptool's bytecode compiled beforehand, as an installed
    package has it (pip compiles at install): with PYTHONDONTWRITEBYTECODE set, every
    run of a source checkout would otherwise compile all of pcaptool first (~0.15 s)."""
    compileall.compile_dir(REPO / "pcaptool", quiet=1)
    env = dict(os.environ, **(extra_env or {}))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err.decode(errors='replace')}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def count(path: Path) -> int:
    sys.path.insert(0, str(REPO))
    from pcaptool.capfile.reader import CaptureReader, open_input

    with open_input(str(path)) as f:
        return sum(1 for _ in CaptureReader(f, path.name))


def ensure_capture(capture: Path | None, packets: int) -> Path:
    """The given capture, or bench/gen_http.py's one of `packets` packets (made once)."""
    if capture is not None:
        return capture
    capture = BENCH / "out" / f"http{packets}.pcap"
    capture.parent.mkdir(parents=True, exist_ok=True)
    if not capture.exists():
        subprocess.run(
            [sys.executable, str(BENCH / "gen_http.py"), str(capture), str(packets)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return capture
