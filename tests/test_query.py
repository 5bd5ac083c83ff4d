"""`pcaptool query`: the tables, the example queries of docs/query.md, outputs, memory."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
import sys

import pytest
from runbuilder import build, quantile_cont
from typer.testing import CliRunner

from conftest import REPO, peak_kib, run_pcaptool
from pcaptool.cli import app

duckdb = pytest.importorskip("duckdb")
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build(tmp_path_factory.mktemp("run") / "run.pcap")


def query(sql: str, *inputs) -> list[dict]:
    result = runner.invoke(app, ["query", sql, *map(str, inputs)])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_latency_percentiles_per_endpoint_equal_the_built_latencies(run):
    rows = query(
        "SELECT path, count(*) AS n, quantile_cont(latency_s, 0.5) AS p50, "
        "quantile_cont(latency_s, 0.95) AS p95, quantile_cont(latency_s, 0.99) AS p99 "
        "FROM requests GROUP BY path ORDER BY path",
        run.path,
    )
    assert [r["path"] for r in rows] == sorted(run.latencies)
    for row in rows:
        want = run.latencies[row["path"]]
        assert int(row["n"]) == len(want)
        for q in ("50", "95", "99"):
            assert float(row[f"p{q}"]) == pytest.approx(quantile_cont(want, int(q) / 100), abs=1e-9)


def test_requests_carry_status_trace_and_flow(run):
    rows = query("SELECT status, trace, flow_id, method, host FROM requests", run.path)
    assert sorted(int(r["status"]) for r in rows) == sorted(run.statuses)
    assert all(re.fullmatch(r"[0-9a-f]{32}", r["trace"].rpartition("/")[2]) for r in rows)
    assert all(r["flow_id"] and r["method"] == "GET" and r["host"] == "svc" for r in rows)


def test_connections_and_dns_tables(run):
    conns = query("SELECT state FROM connections WHERE proto = 'TCP'", run.path)
    assert sum(r["state"] == "REJ" for r in conns) == run.refused
    assert sum(r["state"] == "SF" for r in conns) == len(conns) - run.refused
    dns = query("SELECT name, rcode, latency_s FROM dns ORDER BY name", run.path)
    assert [(r["name"], r["rcode"]) for r in dns] == [
        ("nope.example", "NXDOMAIN"),
        ("svc.example", "NOERROR"),
    ]
    assert [float(r["latency_s"]) for r in dns] == pytest.approx([0.009, 0.003])


def test_retransmissions_per_flow(run):
    rows = query("SELECT sum(retransmissions) AS n FROM connections", run.path)
    assert int(rows[0]["n"]) == run.retransmissions


def test_ndjson_parts_and_directories_give_the_same_tables(run, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    out = run_pcaptool("translate", "--flows", str(run.path))
    assert out.returncode == 0
    (parts / "run.json").write_bytes(out.stdout)
    sql = "SELECT count(*) AS n, sum(latency_s) AS s FROM requests"
    assert query(sql, parts) == query(sql, run.path)
    sql = "SELECT count(*) AS n FROM connections"
    assert query(sql, parts / "run.json") == query(sql, run.path)


def _doc_queries() -> list[str]:
    text = (REPO / "docs" / "query.md").read_text()
    section = text.split("### Example queries", 1)[1].split("### Memory", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


@pytest.mark.parametrize("sql", _doc_queries(), ids=lambda s: s.split("\n")[0][:40])
def test_every_example_query_of_the_docs_runs_on_real_output(sql, run, corpus):
    inputs = [run.path, corpus / "arkime-tcp-retrans-dupack.pcap", corpus / "tcpdump-dns_udp.pcap"]
    rows = query(sql, *inputs)
    assert rows, "each example finds something in this run"


def test_doc_examples_cover_what_the_issue_asks():
    joined = "\n".join(_doc_queries())
    for needle in ("quantile_cont", "time_bucket", "LIMIT 10", "retransmissions", "REJ"):
        assert needle in joined


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_output_files_hold_every_row(run, tmp_path, suffix):
    out = tmp_path / f"rows{suffix}"
    result = runner.invoke(
        app, ["query", "SELECT num, src FROM packets", str(run.path), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    reader = {".csv": "read_csv", ".json": "read_json", ".parquet": "read_parquet"}[suffix]
    n = duckdb.execute(f"SELECT count(*) FROM {reader}('{out}')").fetchone()[0]
    packets = len(query("SELECT num FROM packets", run.path))
    assert n == packets > 0


def test_ndjson_on_stdout(run):
    result = runner.invoke(
        app, ["query", "SELECT status FROM requests LIMIT 3", str(run.path), "-F", "ndjson"]
    )
    assert result.exit_code == 0
    assert [json.loads(line)["status"] for line in result.stdout.splitlines()] == [200, 200, 200]


def test_bad_sql_is_one_line_and_exit_1(run):
    out = run_pcaptool("query", "SELECT nope FROM packets", str(run.path))
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.startswith("pcaptool: error: query:") and err.count("\n") == 1


def test_too_little_memory_to_load_is_one_line_and_exit_1(run):
    out = run_pcaptool("query", "SELECT 1", str(run.path), "--memory", "1MB")
    assert out.returncode == 1
    err = out.stderr.decode()
    assert "too small to load" in err and "--memory" in err and err.count("\n") == 1


def test_usage_errors_exit_2(run, tmp_path):
    for args in (["-F", "xml"], ["-F", "parquet"], ["-o", str(tmp_path / "x.txt")]):
        out = run_pcaptool("query", "SELECT 1", str(run.path), *args)
        assert out.returncode == 2, args
        assert out.stderr.decode().count("\n") == 1
    assert not (tmp_path / "x.txt").exists()


def test_a_closed_pipe_ends_quietly(run):
    cmd = [sys.executable, "-m", "pcaptool", "query", "SELECT * FROM packets", str(run.path)]
    p = subprocess.run(f"{shlex.join(map(str, cmd))} | head -1", shell=True, capture_output=True)
    assert p.returncode == 0 and p.stderr == b""


def test_memory_stays_bounded_on_a_large_run(tmp_path):
    big = tmp_path / "big.pcap"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_http.py"), str(big), "100000"], check=True
    )
    sql = "SELECT path, quantile_cont(latency_s, 0.99) FROM requests GROUP BY path"
    code, err, peak_kb = peak_kib(tmp_path, "query", sql, str(big), "--memory", "64MB")
    assert code == 0, err
    # DuckDB's limit plus about 100 MB of Python (measured: ~165 MB at 64 MB, ~230 MB at
    # 128 MB, for 100k and 200k packets); the allocator's own cache is held to 16 MB
    assert peak_kb < 300 * 1024, f"peak {peak_kb // 1024} MB"
