"""The README's "Finding network trouble" jq recipes, run on real translate output."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess

import pytest

from conftest import CORPUS, REPO, run_pcaptool

pytestmark = pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed")
# real captures holding each kind of trouble (retransmissions, a refused and an unanswered
# connect, DNS answers and an unanswered query)
CAPTURES = (
    "sv-http-keepalive-capture-gaps.pcap",
    "deepflow-tcp-syn-rst-vlan.pcap",
    "deepflow-tcp-syn-no-answer.pcap",
    "tcpdump-dns_udp.pcap",
    "tcpdump-linktype-raw-ipv4.pcap",
)


def recipes() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("### Finding network trouble") :]
    block = block[block.index("```sh\n") + 6 : block.index("\n```", block.index("```sh\n"))]
    return [line for line in block.splitlines() if line.startswith("jq ")]


@pytest.fixture(scope="module")
def run_json(tmp_path_factory):
    if not CORPUS.is_dir():
        pytest.skip("the shared corpus is absent")
    out = tmp_path_factory.mktemp("recipes") / "run.json"
    lines = []
    for name in CAPTURES:
        r = run_pcaptool("translate", "--flows", str(CORPUS / name))
        assert r.returncode == 0, r.stderr
        lines.append(r.stdout.decode())
    out.write_text("".join(lines))
    return out


def jq(line: str, path) -> list:
    args = shlex.split(line)
    assert args[-1] == "run.json"
    r = subprocess.run([*args[:-1], str(path)], capture_output=True, text=True, check=True)
    return [json.loads(x) for x in r.stdout.splitlines()]


def test_there_are_three_recipes():
    assert len(recipes()) == 3


def test_retransmissions_per_flow(run_json):
    records = [json.loads(x) for x in run_json.read_text().splitlines()]
    want: dict[str, int] = {}
    for r in records:
        if "retransmission" in r.get("tcp", {}).get("analysis", {}).get("flags", ()):
            want[r["flow"]["id"]] = want.get(r["flow"]["id"], 0) + 1
    got = jq(recipes()[0], run_json)
    assert got and {g["flow"]: g["retransmissions"] for g in got} == want
    assert [g["retransmissions"] for g in got] == sorted(want.values(), reverse=True)


def test_failed_connections(run_json):
    got = jq(recipes()[1], run_json)
    outcomes = {g["outcome"] for g in got}
    assert {"refused", "timeout"} <= outcomes
    assert all(re.fullmatch(r".+:\d+", g["resp"]) for g in got)
    assert any(g["outcome"] == "timeout" and g["syn_retries"] >= 1 for g in got)


def test_slow_dns(run_json):
    got = jq(recipes()[2], run_json)
    assert any(g["outcome"] == "timeout" for g in got)
    assert any(g["ms"] and g["ms"] > 100 for g in got)
