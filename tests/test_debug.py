"""PCAP_DEBUG=true: each pcaptool process logs its start and end as DEBUG lines."""

from __future__ import annotations

import orjson

from conftest import pcaptool_env, run_pcaptool


def _lines(stderr: bytes) -> list[dict]:
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]


def test_debug_lines_at_start_and_end(tmp_path):
    env = {**pcaptool_env(), "PCAP_DEBUG": "true"}
    r = run_pcaptool("schema", env=env)
    assert r.returncode == 0, r.stderr
    start, end = [x for x in _lines(r.stderr) if x["severity"] == "DEBUG"]
    assert (start["message"], start["args"]) == ("schema starting", ["schema"])
    assert end["message"] == "schema ending" and end["pid"] == start["pid"]
    assert end["cpu_seconds"] > 0 and end["peak_rss_kib"] > 1000


def test_no_debug_lines_by_default():
    env = {k: v for k, v in pcaptool_env().items() if k != "PCAP_DEBUG"}
    r = run_pcaptool("schema", env=env)
    assert r.returncode == 0 and not any(x["severity"] == "DEBUG" for x in _lines(r.stderr))
