"""`pcaptool schedule`: next-time computation (incl. DST) and real scheduled runs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conftest import PCAPTOOL, pcaptool_env, run_pcaptool
from pcaptool.errors import UsageError
from pcaptool.sidecar.schedule import parse_go_duration, parse_schedule


def iso(ts: list[datetime]) -> list[str]:
    return [t.isoformat() for t in ts]


# --------------------------------------------------------------------- next times


def test_six_fields_put_seconds_first_like_the_reference():
    # robfig/cron (the reference's gocron.CronJob(exp, true)): second minute hour dom mon dow.
    # "30 0 * * * *" is 30 s past each hour; croniter's default order would read it as
    # minute 30 of hour 0 with seconds '*'.
    s = parse_schedule("30 0 * * * *", "UTC")
    start = datetime(2026, 1, 1, 5, 10, tzinfo=UTC)
    assert iso(s.times(start, 2)) == ["2026-01-01T06:00:30+00:00", "2026-01-01T07:00:30+00:00"]


def test_six_field_every_fifteen_seconds():
    s = parse_schedule("*/15 * * * * *", "UTC")
    start = datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC)
    assert iso(s.times(start, 4)) == [
        "2026-01-01T12:00:15+00:00",
        "2026-01-01T12:00:30+00:00",
        "2026-01-01T12:00:45+00:00",
        "2026-01-01T12:01:00+00:00",
    ]


def test_five_fields_and_day_or_semantics():
    # Vixie cron (and robfig/cron): with both day fields restricted, either one matches.
    s = parse_schedule("2 4 1 * wed", "UTC")
    start = datetime(2010, 1, 25, 4, 46, tzinfo=UTC)
    assert iso(s.times(start, 3)) == [
        "2010-01-27T04:02:00+00:00",
        "2010-02-01T04:02:00+00:00",
        "2010-02-03T04:02:00+00:00",
    ]


def test_strictly_after_the_start():
    s = parse_schedule("0 * * * *", "UTC")
    on_time = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert s.next_after(on_time) == on_time + timedelta(hours=1)


def test_times_are_in_the_schedule_zone():
    s = parse_schedule("0 9 * * *", "Asia/Tokyo")
    nxt = s.next_after(datetime(2026, 6, 1, 0, 30, tzinfo=UTC))  # 09:30 in Tokyo
    assert nxt.isoformat() == "2026-06-02T09:00:00+09:00"
    assert nxt.astimezone(UTC).isoformat() == "2026-06-02T00:00:00+00:00"


def test_cron_tz_prefix_overrides_the_zone():
    s = parse_schedule("CRON_TZ=Asia/Tokyo 0 9 * * *", "UTC")
    assert s.zone.key == "Asia/Tokyo"
    assert (
        s.next_after(datetime(2026, 5, 31, 12, tzinfo=UTC)).isoformat()
        == "2026-06-01T09:00:00+09:00"
    )


def test_descriptors_and_every():
    start = datetime(2026, 1, 1, 0, 10, 20, 500_000, tzinfo=UTC)
    assert parse_schedule("@hourly").next_after(start).isoformat() == "2026-01-01T01:00:00+00:00"
    assert parse_schedule("@daily").next_after(start).isoformat() == "2026-01-02T00:00:00+00:00"
    # robfig/cron's @every: the delay counted from the start of the current second.
    every = parse_schedule("@every 1m30s")
    assert every.next_after(start).isoformat() == "2026-01-01T00:11:50+00:00"
    assert parse_go_duration("1.5h") == 5_400 * 10**9
    assert parse_go_duration("250ms") == 250 * 10**6


# DST, as croniter documents it (its README "About DST" and tests test_dst_hourly,
# test_dst_issue90_st31ny): a time in a spring-forward gap runs at the first valid
# time after it; times are computed on zone-aware datetimes.


def test_dst_spring_forward_gap_runs_right_after_the_gap():
    paris = ZoneInfo("Europe/Paris")  # 2020-03-29 02:00 -> 03:00
    start = datetime(2020, 3, 29, 1, 59, 55, tzinfo=paris)
    five = parse_schedule("1 2 * * *", "Europe/Paris")
    assert iso(five.times(start, 3)) == [
        "2020-03-29T03:00:00+02:00",
        "2020-03-30T02:01:00+02:00",
        "2020-03-31T02:01:00+02:00",
    ]
    # The same schedule in the reference's six-field form gives the same times.
    six = parse_schedule("0 1 2 * * *", "Europe/Paris")
    assert iso(six.times(start, 3)) == iso(five.times(start, 3))


def test_dst_hourly_skips_the_missing_hour():
    london = ZoneInfo("Europe/London")  # 2025-03-30 01:00 -> 02:00
    s = parse_schedule("7 * * * *", "Europe/London")
    assert iso(s.times(datetime(2025, 3, 30, tzinfo=london), 3)) == [
        "2025-03-30T00:07:00+00:00",
        "2025-03-30T02:07:00+01:00",
        "2025-03-30T03:07:00+01:00",
    ]


def test_dst_fall_back_keeps_real_time_increasing():
    london = ZoneInfo("Europe/London")  # 2025-10-26 02:00 BST -> 01:00 GMT
    s = parse_schedule("0 */30 * * * *", "Europe/London")
    times = s.times(datetime(2025, 10, 26, 0, 10, tzinfo=london), 6)
    instants = [t.astimezone(UTC) for t in times]
    assert instants == sorted(set(instants))
    # Every half hour of real time, through the repeated hour.
    assert all(b - a == timedelta(minutes=30) for a, b in zip(instants, instants[1:], strict=False))


@pytest.mark.parametrize(
    "expr, words",
    [
        ("", "empty cron expression"),
        ("* * *", "has 3 fields"),
        ("* * * * * * 2030", "has 7 fields"),
        ("61 * * * *", "invalid cron expression"),
        ("*/0 * * * *", "invalid cron expression"),
        ("0 0 30 2 *", "invalid cron expression"),  # never matches
        ("H * * * *", "invalid cron expression"),
        ("@fortnightly", "unknown cron descriptor"),
        ("@every soon", "bad duration"),
        ("CRON_TZ=Nowhere/Land * * * * *", "unknown time zone"),
    ],
)
def test_bad_expressions_are_usage_errors(expr, words):
    with pytest.raises(UsageError, match=words):
        parse_schedule(expr, "UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "utc ", "../etc/passwd"])
def test_bad_zones_are_usage_errors(zone):
    with pytest.raises(UsageError, match="unknown time zone"):
        parse_schedule("* * * * *", zone)


# ----------------------------------------------------------------------------- CLI


def test_cli_bad_expression_is_one_line_exit_2():
    r = run_pcaptool("schedule", "--cron", "* * * * * * *", "--", "true")
    assert r.returncode == 2
    assert r.stdout == b""
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pcaptool: error: cron expression")


def test_cli_bad_zone_from_env_is_one_line_exit_2():
    env = pcaptool_env() | {"PCAP_CRON_EXP": "*/5 * * * *", "PCAP_TIMEZONE": "Atlantis/Capital"}
    r = run_pcaptool("schedule", "--", "true", env=env)
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        "pcaptool: error: unknown time zone 'Atlantis/Capital' (PCAP_TIMEZONE): "
        "use an IANA id such as UTC or America/New_York"
    ]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--cron", "* * * * *", "--timeout", "abc", "--", "true"], "PCAP_TIMEOUT_SECS"),
        (["--cron", "* * * * *", "--", "no-such-program-ptsc"], "command not found"),
        (["--cron", "* * * * *"], "no command to schedule"),
        (["--", "true"], "no cron expression"),
    ],
)
def test_cli_other_usage_errors(args, words):
    env = {k: v for k, v in pcaptool_env().items() if not k.startswith("PCAP_")}
    r = run_pcaptool("schedule", *args, env=env)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr.decode()
    assert len(r.stderr.decode().splitlines()) == 1


def test_cli_check_prints_next_times_from_env():
    env = pcaptool_env() | {"PCAP_CRON_EXP": "0 0 12 * * *", "PCAP_TIMEZONE": "America/New_York"}
    r = run_pcaptool("schedule", "--check", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["timezone"] == "America/New_York"
    times = [datetime.fromisoformat(t) for t in out["next_runs"]]
    assert len(times) == 5
    assert all(t.astimezone(ZoneInfo("America/New_York")).hour == 12 for t in times)
    assert all((b - a) == timedelta(days=1) for a, b in zip(times, times[1:], strict=False))


# ------------------------------------------------------------------------ real runs


def events(stderr: bytes) -> list[dict]:
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


def test_two_runs_within_a_minute_six_fields_with_timeout(tmp_path: Path):
    marks = tmp_path / "marks"
    cmd = ["sh", "-c", f"date +%s.%N >> {marks}; exec sleep 60"]
    t0 = time.monotonic()
    r = run_pcaptool(
        "schedule", "--cron", "*/4 * * * * *", "--timeout", "1.5", "--grace", "2",
        "--runs", "2", "--", *cmd, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    ev = events(r.stderr)
    starts = [e for e in ev if e["event"] == "start"]
    ends = [e for e in ev if e["event"] == "end"]
    assert len(starts) == 2 and len(ends) == 2
    assert [e["event"] for e in ev].count("timeout") == 2
    for e in ends:
        assert e["timed_out"] is True and e["signal"] == "SIGTERM" and e["severity"] == "INFO"
        assert 1.4 <= e["duration_secs"] < 3.5
    scheduled = [datetime.fromisoformat(e["scheduled"]) for e in starts]
    assert all(t.second % 4 == 0 and t.microsecond == 0 for t in scheduled)
    assert scheduled[1] - scheduled[0] == timedelta(seconds=4)
    # Both runs really ran, each started close to its scheduled second.
    started = [float(x) for x in marks.read_text().split()]
    assert len(started) == 2
    for s, t in zip(started, scheduled, strict=True):
        assert 0 <= s - t.timestamp() < 1.0
    # Every start and end logs the next run time; everything in well under a minute.
    assert all("next_run" in e for e in starts)
    assert "next_run" in ends[0]
    assert elapsed < 30


def test_overlapping_time_is_skipped_and_logged(tmp_path: Path):
    marks = tmp_path / "marks"
    cmd = ["sh", "-c", f"echo run >> {marks}; sleep 3.2"]
    r = run_pcaptool("schedule", "--cron", "*/2 * * * * *", "--runs", "1", "--", *cmd, timeout=60)
    assert r.returncode == 0, r.stderr
    ev = events(r.stderr)
    kinds = [e["event"] for e in ev]
    assert kinds[0] == "scheduled" and kinds[1] == "start" and kinds[-1] == "end"
    skipped = [e for e in ev if e["event"] == "skipped"]
    assert len(skipped) >= 1
    assert skipped[0]["severity"] == "WARNING" and skipped[0]["run"] == 1
    # Never two at once: the skipped time started nothing.
    assert marks.read_text().split() == ["run"]
    assert ev[-1]["exit_status"] == 0 and ev[-1]["timed_out"] is False


def test_timeout_escalates_to_sigkill_for_the_whole_group(tmp_path: Path):
    pidfile = tmp_path / "child.pid"
    # The shell ignores SIGTERM and so does its child: only SIGKILL ends them.
    script = f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"
    r = run_pcaptool(
        "schedule", "--cron", "* * * * * *", "--timeout", "1", "--grace", "1",
        "--runs", "1", "--", "sh", "-c", script, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr  # a run that had to be killed is a failure
    end = events(r.stderr)[-1]
    assert end["event"] == "end" and end["signal"] == "SIGKILL" and end["severity"] == "ERROR"
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )


def test_sigterm_stops_the_running_command_gracefully_and_exits_0(tmp_path: Path):
    marker = tmp_path / "stopped"
    started = tmp_path / "started"
    script = f"trap 'echo graceful > {marker}; exit 0' TERM; touch {started}; while :; do sleep 0.1; done"
    proc = subprocess.Popen(
        [*PCAPTOOL, "schedule", "--cron", "* * * * * *", "--", "sh", "-c", script],
        env=pcaptool_env(),
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert marker.read_text().strip() == "graceful"
    ev = events(err)
    assert ev[-1]["event"] == "stopped"
    end = [e for e in ev if e["event"] == "end"][-1]
    assert end["exit_status"] == 0 and end["severity"] == "INFO"
