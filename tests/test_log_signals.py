"""The one logger (pcaptool.log), the one stop-signal helper (pcaptool.signals), and that
no module grew its own copy of either again."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import threading
from pathlib import Path

import pytest

from pcaptool.log import Logger, log
from pcaptool.signals import StopSignals

PACKAGE = Path(__file__).resolve().parent.parent / "pcaptool"


def test_logger_lines_are_cloud_logging_json_with_fixed_fields():
    out = io.StringIO()
    logger = Logger(out, timestamps=True, component="schedule")
    logger("INFO", "next run", path=Path("/x"), ids={3})
    (line,) = out.getvalue().splitlines()
    rec = json.loads(line)
    assert list(rec)[:2] == ["severity", "message"]
    assert rec["component"] == "schedule" and rec["path"] == "/x" and rec["ids"] == [3]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", rec["time"])


def test_logger_lines_from_threads_never_interleave():
    out = io.StringIO()
    logger = Logger(out)
    threads = [
        threading.Thread(target=lambda i=i: [logger("INFO", "x" * 500, n=i) for _ in range(200)])
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1600 and all(json.loads(line)["message"] == "x" * 500 for line in lines)


def test_a_closed_stderr_is_no_crash():
    closed = io.StringIO()
    closed.close()
    Logger(closed)("ERROR", "nobody listens")  # no exception


def test_stop_signals_event_fd_callback_and_restore():
    seen = []
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(on_signal=seen.append) as stop:
        assert not stop.stopping
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        readable, _, _ = select.select([stop.fd], [], [], 5)
        assert readable == [stop.fd]
        stop.drain()
        assert select.select([stop.fd], [], [], 0)[0] == []
        os.kill(os.getpid(), signal.SIGINT)  # a second one is reported too
    assert seen == [signal.SIGTERM, signal.SIGINT] and stop.signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_ignore_repeats_keeps_a_clean_stop_from_becoming_a_kill():
    before = signal.getsignal(signal.SIGTERM)
    try:
        with StopSignals(ignore_repeats=True) as stop:
            stop.trigger()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize(
    ("pattern", "home"),
    [
        (r"signal\.signal\(signal\.SIG(TERM|INT)|signal\.signal\(sig,", "signals.py"),
        (r"os\.dup2\(", "stdio.py"),
        (r'"severity":\s*severity', "log.py"),
        (r"storage\.Client\(", "storage/gcs.py"),
        (r"refusing to write", "stdio.py"),
    ],
)
def test_each_cross_cutting_mechanism_has_one_home(pattern, home):
    found = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if re.search(pattern, p.read_text())
    )
    assert found == [home]


def test_the_process_logger_writes_to_stderr(capfd):
    log("NOTICE", "hello", n=1)
    assert json.loads(capfd.readouterr().err) == {"severity": "NOTICE", "message": "hello", "n": 1}
