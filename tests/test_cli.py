"""CLI habits of tcpdump/tshark/jq users, in-process with typer's CliRunner.

Usage errors are one line, `--where`/`--fields` select records, `--pretty` is jq-like,
`schedule` takes robfig/cron syntax exactly, refused arguments leave no output file.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from pcaptool.cli import app
from pcaptool.errors import UsageError
from pcaptool.translate.select import compile_where, parse_fields, project

GOLDEN = Path(__file__).resolve().parent / "golden"
runner = CliRunner()


def leaf_commands(group=None, path=()):
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if getattr(cmd, "commands", None):
            yield from leaf_commands(cmd, (*path, name))
        else:
            yield (*path, name)


@pytest.mark.parametrize("path", list(leaf_commands()), ids=" ".join)
def test_unknown_option_is_one_line_on_stderr_exit_2(path) -> None:
    r = runner.invoke(app, [*path, "-x"])
    assert r.exit_code == 2
    assert r.stdout == ""
    if path == ("schedule",):  # takes unknown words as its COMMAND; then lacks --cron
        assert r.stderr.count("\n") == 1 and "error:" in r.stderr
        return
    assert r.stderr == f"pcaptool {' '.join(path)}: error: no such option: -x\n"


def test_bad_value_is_one_line_exit_2_naming_the_option() -> None:
    r = runner.invoke(app, ["translate", "--workers", "0", str(GOLDEN / "raw.pcap")])
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith("pcaptool translate: error: invalid value for '--workers'")


# -- --where: jq's select() without the select ----------------------------------------------

RECS = [
    {"pcap": {"num": 1}, "ip": {"src": "10.0.0.1"}, "http": {"status": 503, "method": "GET"}},
    {"pcap": {"num": 2}, "ip": {"src": "10.0.0.2"}, "http": {"status": 200}},
    {"pcap": {"num": 3}, "tcp": {"flags": {"syn": True}}, "dns": {"answers": [{"type": "A"}]}},
    {
        "pcap": {"num": 4},
        "logging.googleapis.com/trace": "projects/p/traces/abc",
        "tls": {"sni": "api.example.com"},
    },
]


@pytest.mark.parametrize(
    ("expression", "nums"),
    [
        ("http.status>=500", [1]),
        (".http.status >= 500", [1]),
        ("http.status < 500", [2, 3, 4]),  # no http: null, and null < 500 in jq too
        ("http and http.status < 500", [2]),
        ("http", [1, 2]),
        (".tcp and not .http", [3]),
        ('http.method == "GET" or tls.sni ~ "example"', [1, 4]),
        ("dns.answers[0].type == 'A'", [3]),
        ('.["logging.googleapis.com/trace"] ~ "traces/abc$"', [4]),
        ("not (http.status == 200 or pcap.num > 2)", [1]),
        ("pcap.num != 2 and ip", [1]),
        ("http.status == null", [3, 4]),
    ],
)
def test_where_has_jqs_meaning(expression, nums) -> None:
    keep = compile_where(expression)
    assert [r["pcap"]["num"] for r in RECS if keep(r)] == nums


@pytest.mark.parametrize(
    "bad", ["http.status >=", "(tcp", "tls.sni ~ 5", "a == 'x' extra", "x ~ '('", "#"]
)
def test_where_refuses_what_it_cannot_read_in_one_line(bad) -> None:
    with pytest.raises(UsageError) as info:
        compile_where(bad)
    assert "\n" not in str(info.value) and "--where" in str(info.value)


def test_fields_keep_only_the_named_paths_nested() -> None:
    paths = parse_fields("pcap.num,ip.src,http.status")
    assert [project(r, paths) for r in RECS[:3]] == [
        {"pcap": {"num": 1}, "ip": {"src": "10.0.0.1"}, "http": {"status": 503}},
        {"pcap": {"num": 2}, "ip": {"src": "10.0.0.2"}, "http": {"status": 200}},
        {"pcap": {"num": 3}},
    ]


def test_translate_where_and_fields() -> None:
    r = runner.invoke(
        app,
        [
            "translate",
            str(GOLDEN / "dns_tls.pcap"),
            "--where",
            "tls.sni",
            "--fields",
            "pcap.num,tls.sni",
        ],
    )
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert recs and all(set(rec) == {"pcap", "tls"} and rec["tls"]["sni"] for rec in recs)


def test_merge_ndjson_where_fields_and_count(tmp_path) -> None:
    part, out = tmp_path / "a.json", tmp_path / "out.json"
    recs = [
        {**r, "pcap": {**r["pcap"], "date": f"2026-01-01T00:00:0{i}Z"}} for i, r in enumerate(RECS)
    ]
    part.write_bytes(b"".join(orjson.dumps(rec) + b"\n" for rec in recs))
    args = ["merge", "-F", "ndjson", "-o", str(out), "--where", "pcap.num != 2", "-c", "2"]
    r = runner.invoke(app, [*args, "--fields", "pcap.num", str(part)])
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {"pcap": {"num": 1}},
        {"pcap": {"num": 3}},
    ]


# -- --pretty ------------------------------------------------------------------------------


def test_pretty_is_jq_style_indentation_and_plain_off_a_terminal() -> None:
    plain = runner.invoke(app, ["translate", "--run-id", "r", str(GOLDEN / "raw.pcap")])
    pretty = runner.invoke(
        app, ["translate", "--run-id", "r", "--pretty", str(GOLDEN / "raw.pcap")]
    )
    assert pretty.exit_code == 0
    want = b"".join(
        orjson.dumps(json.loads(line), option=orjson.OPT_INDENT_2) + b"\n"
        for line in plain.stdout.splitlines()
    )
    assert pretty.stdout_bytes == want
    assert b"\x1b[" not in pretty.stdout_bytes


def test_pretty_colours_on_a_terminal_only() -> None:
    import io

    from pcaptool.record.pretty import PrettyWriter

    out = io.BytesIO()
    PrettyWriter(out, colour=True).write({"a": "b", "n": 1, "z": None})
    text = out.getvalue()
    assert b'\x1b[34;1m"a"' in text and b'\x1b[0;32m"b"' in text and b"\x1b[1;30mnull" in text


# -- schedule: robfig/cron, exactly ------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    ["*/5 * * * *", "0 */10 * * * *", "0 12 * JAN-MAR MON-FRI", "0 0 ? * *", "0 0 1,15 * *",
     "@hourly", "@daily", "@every 90s", "@every 1h30m", "0-30/10 * * * * ?"],
)  # fmt: skip
def test_schedule_accepts_robfig_syntax(cron) -> None:
    r = runner.invoke(app, ["schedule", "--check", "--cron", cron])
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)["next_runs"]) == 5


@pytest.mark.parametrize(
    "cron",
    ["0 0 L * *", "0 0 * * 5#3", "0 0 15W * *", "H * * * *", "0 0 * * 7", "*/0 * * * *",
     "5-1 * * * *", "60 * * * *", "* * * * * * 2026", "@reboot"],
)  # fmt: skip
def test_schedule_refuses_croniter_extensions_in_one_line(cron) -> None:
    r = runner.invoke(app, ["schedule", "--check", "--cron", cron])
    assert r.exit_code == 2
    assert r.stdout == "" and r.stderr.count("\n") == 1


# -- refused arguments leave nothing behind -------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["merge", "-F", "bogus"],
        ["merge", "-f", "tcp portt"],
        ["merge", "--where", "http.status >="],
        ["capture", "--filter", "tcp portt", "-w"],
        ["capture", "-i", "pcaptool-no-such-if", "-w"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_refused_arguments_leave_no_output_file(tmp_path, args) -> None:
    out = tmp_path / "out.pcap"
    argv = (
        [*args, str(out)] if args[-1] == "-w" else [*args, "-o", str(out), str(GOLDEN / "raw.pcap")]
    )
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.count("\n") == 1
    assert not out.exists()


def test_snaplen_0_means_the_whole_packet() -> None:
    from pcaptool.commands._options import snaplen_or_whole

    assert snaplen_or_whole(0) == 262144 and snaplen_or_whole(96) == 96
    r = runner.invoke(app, ["capture", "-s", "0", "--print-filter"])
    assert r.exit_code == 0, r.stderr


def test_quiet_keeps_only_warnings_on_stderr(tmp_path) -> None:
    part = tmp_path / "p.pcap"
    part.write_bytes((GOLDEN / "raw.pcap").read_bytes())
    dest = tmp_path / "dest"
    loud = runner.invoke(app, ["upload", "--dest", str(dest), "--prefix", "x", str(part)])
    assert loud.exit_code == 0, loud.stderr
    assert '"severity":"INFO"' in loud.stderr.replace(" ", "") or "NOTICE" in loud.stderr
    part.write_bytes((GOLDEN / "raw.pcap").read_bytes())
    quiet = runner.invoke(
        app, ["upload", "-q", "--dest", str(dest / "2"), "--prefix", "x", str(part)]
    )
    assert quiet.exit_code == 0, quiet.stderr
    assert all(
        json.loads(line)["severity"] in ("WARNING", "ERROR") for line in quiet.stderr.splitlines()
    )
