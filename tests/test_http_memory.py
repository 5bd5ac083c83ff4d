"""Peak memory of `translate` on hostile inputs at growing sizes (issue 11): under the
README's bound, and flat once the caps are reached (VmHWM of a subprocess: conftest.peak_kib)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import HOSTILE

from conftest import peak_kib

BOUND_MB = 768  # README: "Memory"
# Inputs whose state is capped per connection or per translation: 8x the input may not
# cost more than this. Connections themselves cost up to ~6 KB each until the table's
# 40,000 are reached.
FLAT_MB = 24
PER_CONNECTION_KB = 8


def peak_mb(path) -> float:
    code, err, kib = peak_kib(Path(path).parent, "translate", "--flows", str(path))
    assert code == 0, err
    return kib / 1024


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_peak_memory_bounded_on_hostile_input(tmp_path, name):
    build, small, large = HOSTILE[name]
    if name == "h1_many_connections":
        large = small * 4  # 16,000 connections take a while; the slope is what counts
    a = peak_mb(build(tmp_path / "a.pcap", small))
    b = peak_mb(build(tmp_path / "b.pcap", large))
    assert b < BOUND_MB
    if name in ("h1_many_connections", "h1_unterminated"):
        assert b - a < (large - small) * PER_CONNECTION_KB / 1024 + FLAT_MB, (a, b)
    else:
        assert b - a < FLAT_MB, (a, b)
