"""`pcaptool schedule`: run a command at cron times, one run at a time, each bounded."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity
from pcaptool.errors import UsageError


def _seconds(value: str, name: str) -> float:
    try:
        secs = float(value)
    except ValueError:
        secs = math.nan
    if not math.isfinite(secs) or secs < 0:
        raise UsageError(f"{name} must be a number of seconds >= 0 (0 = no limit), not {value!r}")
    return secs


# schedule's options
Command = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="COMMAND", help="The command to run at each time, after '--'.", show_default=False
    ),
]
Cron = Annotated[
    str | None,
    typer.Option(
        "--cron",
        metavar="EXPR",
        envvar="PCAP_CRON_EXP",
        help="Cron expression: 5 fields, or 6 with SECONDS FIRST as in the reference "
        "sidecar (robfig/cron); also @hourly/@daily/... and '@every 90s'.",
        show_default=False,
    ),
]
Tz = Annotated[
    str, typer.Option("--tz", envvar="PCAP_TIMEZONE", help="IANA time zone of the expression.")
]
Timeout = Annotated[
    str,
    typer.Option(
        "--timeout",
        metavar="SECS",
        envvar="PCAP_TIMEOUT_SECS",
        help="Stop each run after this many seconds (SIGTERM, then SIGKILL after --grace); 0 = no limit.",
    ),
]
Grace = Annotated[
    str,
    typer.Option(
        "--grace", metavar="SECS", help="Seconds between SIGTERM and SIGKILL when a run is stopped."
    ),
]
Runs = Annotated[
    int | None,
    typer.Option("--runs", min=1, help="Exit after this many runs (default: run until SIGTERM)."),
]
Check = Annotated[
    bool,
    typer.Option(
        "--check", help="Validate, print the next 5 run times as JSON on stdout, and exit."
    ),
]


def schedule(
    command: Command = None,
    cron: Cron = None,
    tz: Tz = "UTC",
    timeout: Timeout = "0",
    grace: Grace = "10",
    runs: Runs = None,
    check: Check = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Run COMMAND at each time of a cron expression; never two runs at once.

    A time that comes while the previous run is still going is skipped (and logged). Each run's start, end, exit status and the next run time are JSON lines on stderr.

    SIGTERM stops the running command gracefully (SIGTERM, then SIGKILL after --grace) and exits 0. A bad expression or time zone is one line and exit status 2.

    Example:

    \b
        # capture 20 s at the top of every minute, in Paris time
        pcaptool schedule --cron '0 * * * * *' --tz Europe/Paris --timeout 20 -- \\
            pcaptool capture -i eth -w /tmp/cap.pcap
        # what would run when
        PCAP_CRON_EXP='*/30 * * * * *' pcaptool schedule --check
    """
    set_verbosity(quiet, verbose)
    from pcaptool.sidecar import schedule as lib

    if not cron:
        raise UsageError("no cron expression: give --cron or set PCAP_CRON_EXP")
    sched = lib.parse_schedule(cron, tz)
    timeout_s = _seconds(timeout, "--timeout/PCAP_TIMEOUT_SECS")
    grace_s = _seconds(grace, "--grace")
    if check:
        _print_check(cron, sched, timeout_s)
        return
    argv = lib.resolve_command(list(command or []))
    scheduler = lib.Scheduler(sched, argv, timeout_s=timeout_s, grace_s=grace_s, max_runs=runs)
    scheduler.install_signal_handlers()
    raise typer.Exit(scheduler.run())


def _print_check(cron: str, sched, timeout_s: float) -> None:
    times = sched.times(datetime.now(UTC), 5)
    next_runs = [t.isoformat() for t in times]
    info = {"cron": cron, "timezone": sched.zone.key, "timeout_secs": timeout_s}
    print(json.dumps({**info, "next_runs": next_runs}))
