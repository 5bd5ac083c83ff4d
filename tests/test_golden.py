"""Golden pairs: tests/golden/<case>.<capture> beside <case>.ndjson."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO, pcaptool_env, run_pcaptool

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
import build  # noqa: E402

CASES = build.CAPTURES


@pytest.mark.parametrize("capture", CASES)
def test_translate_matches_golden(capture: str) -> None:
    result = run_pcaptool(
        "translate", str(GOLDEN / capture), env={**pcaptool_env(), "PCAP_RUN_ID": build.RUN_ID}
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    expected = (GOLDEN / (capture.split(".")[0] + ".ndjson")).read_bytes()
    assert result.stdout.decode().splitlines() == expected.decode().splitlines()


def test_golden_captures_are_what_build_makes(tmp_path: Path, monkeypatch) -> None:
    """The committed captures are exactly what tests/golden/build.py writes."""
    for name in CASES:
        shutil.copy(GOLDEN / name, tmp_path / name)
    monkeypatch.setattr(build, "HERE", tmp_path)
    build.build()
    for name in CASES:
        assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes(), name


def test_every_golden_capture_has_its_ndjson() -> None:
    for name in CASES:
        assert (GOLDEN / (name.split(".")[0] + ".ndjson")).is_file(), name
    assert (REPO / "tests" / "golden" / "build.py").is_file()
