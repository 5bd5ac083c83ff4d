"""Shared test fixtures: the corpus in ../shared, and running the CLI as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# ../shared/corpus beside the clone (CI); PCAPTOOL_CORPUS points elsewhere (a worktree).
CORPUS = Path(os.environ.get("PCAPTOOL_CORPUS") or REPO.parent / "shared" / "corpus")
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def corpus_files() -> list[Path]:
    """Every capture of ../shared/corpus, or [] where it is absent."""
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "LICENSES.md"))


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"../shared/corpus is absent ({CORPUS}); corpus tests need it")
    return CORPUS


def pcaptool_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # one run id for every translate a test starts, so two runs' records compare equal
    env.setdefault("PCAP_RUN_ID", "test-run")
    return env


PCAPTOOL = [sys.executable, "-m", "pcaptool"]


def run_pcaptool(*args: str, input: bytes | None = None, timeout: float = 120, **kw):
    """Run `pcaptool ARGS` as a real process; returns CompletedProcess with bytes out/err."""
    return subprocess.run(
        [*PCAPTOOL, *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=kw.pop("env", None) or pcaptool_env(),
        **kw,
    )


# Runs `pcaptool ARGS` and writes its peak memory (KiB, pcaptool.diagnostics.peak_rss_kib)
# to the file named first, at exit: a child's ru_maxrss would count the test runner's.
PEAK_WRAPPER = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    from pcaptool.diagnostics import peak_rss_kib
    with open(out, "w") as f:
        f.write(str(peak_rss_kib()))
atexit.register(peak)
sys.argv[0] = "pcaptool"
runpy.run_module("pcaptool", run_name="__main__")
"""


def peak_kib(tmp: Path, *args: str, timeout: float = 600) -> tuple[int, bytes, int]:
    """Run `pcaptool ARGS`; (exit status, stderr, peak resident memory in KiB)."""
    out = tmp / f"peak-{os.getpid()}-{len(list(tmp.glob('peak-*')))}.txt"
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, str(out), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
        timeout=timeout,
    )
    return proc.returncode, proc.stderr, int(out.read_text())


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")


# Real Cloud Storage / metadata servers on loopback (tests/gcs_fixtures.py), usable by name.
from gcs_fixtures import gcs_server, metadata_server  # noqa: E402, F401
