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


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")


# Real Cloud Storage / metadata servers on loopback (tests/gcs_fixtures.py), usable by name.
from gcs_fixtures import gcs_server, metadata_server  # noqa: E402, F401
