"""PCAP_VERBOSITY: INFO records keep the envelope, L3/L4 and the HTTP summary only."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from conftest import pcaptool_env, run_pcaptool
from pcaptool.record.verbosity import info_record, parse_level, reducer

REPO = Path(__file__).resolve().parent.parent

FULL = {
    "timestamp": {"seconds": 1, "nanos": 2},
    "severity": "INFO",
    "message": "GET /x",
    "pcap": {"num": 1},
    "l2": {"type": "ethernet", "src": "00:00:00:00:00:01"},
    "ip": {"version": 6, "src": "::1", "ext": [{"type": "hop-by-hop"}]},
    "tcp": {"sport": 1, "dport": 2, "flags_str": "PA", "options": {"mss": 1460}},
    "dns": {"id": 7, "edns": {"udp_size": 1232, "options": [{"code": 10}]}},
    "flow": {"id": "f"},
    "logging.googleapis.com/labels": {"flow": "f"},
    "logging.googleapis.com/trace": "projects/p/traces/t",
    "http": {
        "type": "request",
        "method": "GET",
        "target": "/x",
        "headers": {"host": "h", "cookie": "<redacted>"},
        "trailers": {"grpc-status": "0"},
        "body_sample": "abc",
        "body_size": 3,
        "more": [{"type": "response", "status": 200, "headers": {"a": "b"}}],
    },
    "http2": {"stream": 1, "frames": [{"type": "HEADERS", "headers": {":path": "/x"}}]},
    "httpRequest": {"requestMethod": "GET", "status": 200, "latency": "0.1s"},
}


def test_info_drops_details_and_keeps_the_summary():
    before = copy.deepcopy(FULL)
    info = info_record(FULL)
    assert before == FULL  # the original record is not changed
    assert "l2" not in info
    assert info["ip"] == {"version": 6, "src": "::1"}
    assert info["tcp"] == {"sport": 1, "dport": 2, "flags_str": "PA"}
    assert info["dns"] == {"id": 7, "edns": {"udp_size": 1232}}
    assert info["http"] == {
        "type": "request",
        "method": "GET",
        "target": "/x",
        "body_size": 3,
        "more": [{"type": "response", "status": 200}],
    }
    assert info["http2"] == {"stream": 1}
    for key in ("timestamp", "severity", "message", "pcap", "flow", "httpRequest"):
        assert info[key] == FULL[key]
    assert info["logging.googleapis.com/trace"] == FULL["logging.googleapis.com/trace"]


def test_levels():
    assert parse_level("info") == "INFO" and parse_level(" DEBUG ") == "DEBUG"
    assert reducer("DEBUG") is None and reducer("INFO") is info_record
    with pytest.raises(ValueError, match="INFO or DEBUG"):
        parse_level("TRACE")


@pytest.fixture(scope="module")
def http_capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("verbosity") / "http.pcap"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_http.py"), str(path), "1500"],
        check=True,
        capture_output=True,
    )
    return path


def _records(*args: str, env=None) -> list[dict]:
    r = run_pcaptool("translate", *args, env=env)
    assert r.returncode == 0, r.stderr
    return [orjson.loads(line) for line in r.stdout.splitlines()]


def test_translate_writes_info_records(http_capture):
    debug = _records(str(http_capture))
    info = _records("--verbosity", "INFO", str(http_capture))
    assert info == [info_record(rec) for rec in debug]
    assert any("headers" in (rec.get("http") or {}) for rec in debug)
    assert not any("headers" in (rec.get("http") or {}) for rec in info)
    assert not any("options" in rec.get("tcp", {}) for rec in info)
    assert any("httpRequest" in rec for rec in info)
    # from the environment, and with worker processes: the same records
    env = {**pcaptool_env(), "PCAP_VERBOSITY": "info"}
    parallel = _records("--workers", "2", "--ordered", str(http_capture), env=env)
    assert sorted(map(orjson.dumps, parallel)) == sorted(map(orjson.dumps, info))
    size = {k: len(b"".join(map(orjson.dumps, v))) for k, v in (("d", debug), ("i", info))}
    assert size["i"] < size["d"]


def test_a_bad_level_is_a_usage_error(http_capture):
    r = run_pcaptool("translate", "--verbosity", "LOUD", str(http_capture))
    assert r.returncode == 2 and b"use INFO or DEBUG" in r.stderr
