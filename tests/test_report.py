"""`pcaptool report`: the page renders in headless Chromium, every chart is drawn, and
the numbers shown equal `pcaptool query`'s."""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from runbuilder import build
from typer.testing import CliRunner

from conftest import CORPUS, run_pcaptool
from pcaptool.cli import app
from pcaptool.report.page import SECTIONS, trace_link

pytest.importorskip("duckdb")
pytest.importorskip("matplotlib")
runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


class Page(HTMLParser):
    """Tables (by id, as lists of cell texts) and the drawn SVG elements of each figure."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.figures: dict[str, int] = {}
        self.scripts = 0
        self._table = self._figure = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" or (tag == "link" and a.get("rel") == "stylesheet"):
            self.scripts += 1
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "figure":
            self._figure = a.get("id")
            self.figures[self._figure] = 0
        elif tag in ("path", "use", "rect", "text") and self._figure:
            self.figures[self._figure] += 1
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "figure":
            self._figure = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The built run, plus real captures of the shared corpus where it is there."""
    run = build(tmp_path_factory.mktemp("run") / "run.pcap")
    names = ("arkime-tcp-retrans-dupack.pcap", "tcpdump-dns_udp.pcap",
             "zeek-http-204-304-mixed-services.pcap")  # fmt: skip
    return [str(run.path), *(str(CORPUS / n) for n in names if (CORPUS / n).exists())]


@pytest.fixture(scope="module")
def page(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = run_pcaptool("report", *inputs, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert b"bytes" in result.stderr
    return out


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text())
    return p


def query(sql: str, inputs) -> list[dict]:
    result = runner.invoke(app, ["query", sql, *inputs])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_page_is_self_contained(page):
    text = page.read_text()
    p = parse(page)
    assert p.scripts == 0
    assert not re.search(r'(src|href)="(?!#|https://console\.cloud\.google\.com/traces/)', text)
    assert set(p.figures) == {chart for chart, _, _ in SECTIONS}


def test_endpoint_percentiles_shown_equal_query(page, inputs):
    shown = parse(page).tables["endpoints"]
    header, rows = shown[0], shown[1:]
    assert header[:6] == ["method", "path", "requests", "p50_s", "p95_s", "p99_s"]
    want = query(
        "SELECT method, path, count(*) AS n, quantile_cont(latency_s, 0.5) AS p50, "
        "quantile_cont(latency_s, 0.95) AS p95, quantile_cont(latency_s, 0.99) AS p99 "
        "FROM requests WHERE latency_s IS NOT NULL GROUP BY ALL",
        inputs,
    )
    by_key = {(w["method"], w["path"]): w for w in want}
    assert rows
    for method, path, n, p50, p95, p99, *_ in rows:
        w = by_key[(method, path)]
        assert int(n) == int(w["n"])
        for cell, key in ((p50, "p50"), (p95, "p95"), (p99, "p99")):
            assert float(cell.removesuffix(" ms")) == pytest.approx(float(w[key]) * 1000, abs=5e-4)


def test_totals_talkers_and_worst_requests_equal_query(page, inputs):
    p = parse(page)
    totals = dict(zip(*p.tables["totals"], strict=True))
    want = query(
        "SELECT (SELECT count(*) FROM packets) AS packets, (SELECT sum(len) FROM packets) AS bytes,"
        " (SELECT count(*) FROM requests) AS requests",
        inputs,
    )[0]
    assert {k: totals[k] for k in want} == want
    talkers = query(
        "SELECT src, sum(len) AS b FROM packets WHERE src IS NOT NULL GROUP BY src "
        "ORDER BY b DESC, src LIMIT 10",
        inputs,
    )
    assert [row[:2] for row in p.tables["top_talkers"][1:]] == [[t["src"], t["b"]] for t in talkers]
    worst = query("SELECT latency_s FROM requests ORDER BY latency_s DESC LIMIT 20", inputs)
    shown = [float(r[4].removesuffix(" ms")) for r in p.tables["worst_requests"][1:]]
    assert shown == pytest.approx([float(w["latency_s"]) * 1000 for w in worst], abs=5e-4)


def test_failed_connections_and_dns_shown(page, inputs):
    p = parse(page)
    failed = sum(int(r[4]) for r in p.tables["trouble_over_time"][1:])
    want = query("SELECT count(*) AS n FROM connections WHERE state IN ('REJ', 'S0')", inputs)
    assert failed == int(want[0]["n"]) > 0
    dns = dict(zip(*p.tables["dns_summary"], strict=True))
    want = query(
        "SELECT count(*) AS n, count(*) FILTER (WHERE rcode <> 'NOERROR') AS f FROM dns", inputs
    )
    assert (dns["responses"], dns["failures"]) == (want[0]["n"], want[0]["f"])


def test_trace_links_go_to_cloud_trace():
    link = trace_link("projects/my-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736")
    assert 'href="https://console.cloud.google.com/traces/list?tid=4bf92f35' in link
    assert "project=my-proj" in link
    assert "<script>" not in trace_link('x"><script>alert(1)</script>')


def _chromium(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    base += [
        "--enable-logging=stderr",
        "--v=0",
        "--no-first-run",
        "--user-data-dir=/tmp/pcaptool-chromium",
    ]
    return subprocess.run(base + args, capture_output=True, timeout=timeout)


def _console_errors(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if "CONSOLE" in line]


@needs_chromium
def test_console_error_detection_works(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom')</script>x</body></html>")
    out = _chromium(["--dump-dom", bad.as_uri()])
    assert _console_errors(out.stderr), "the check must see a console error when there is one"


@needs_chromium
def test_page_renders_in_chromium(page, tmp_path):
    import matplotlib.image

    shot = tmp_path / "shot.png"
    out = _chromium(["--window-size=1100,6000", f"--screenshot={shot}", page.as_uri()])
    assert shot.exists(), out.stderr[-2000:]
    assert _console_errors(out.stderr) == []
    dom = _chromium(["--dump-dom", page.as_uri()])
    rendered = Page()
    rendered.feed(dom.stdout.decode())
    for chart, count in rendered.figures.items():
        assert count > 20, f"{chart}: only {count} drawn elements"
    pixels = matplotlib.image.imread(shot)[:, :, :3]
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert non_white > 0.03, f"the page looks blank ({non_white:.1%} non-white)"
    green = ((abs(pixels - [0, 0x9E / 255, 0x73 / 255]) < 0.06).all(axis=2)).sum()
    assert green > 50, "the 2xx colour of the latency and status charts is on screen"


def test_terminal_summary(inputs):
    result = runner.invoke(app, ["report", *inputs])
    assert result.exit_code == 0, result.output
    assert "Latency per endpoint" in result.stdout and "Top talkers" in result.stdout


def test_unwritable_output_is_one_line(inputs):
    out = run_pcaptool("report", inputs[0], "-o", "/nonexistent/dir/r.html")
    assert out.returncode == 1 and out.stderr.decode().count("\n") == 1
