"""Run a command on a cron schedule: one run at a time, each bounded by a timeout.

The expression language is the reference sidecar's. It schedules with gocron
(`gocron.CronJob(PCAP_CRON_EXP, true)`), which parses with robfig/cron and a seconds
field that comes FIRST when there are six fields: `*/30 * * * * *` is "every 30 seconds".
croniter, which computes the times here, puts an optional seconds field LAST by default,
so a six-field expression is handed to it with `second_at_beginning=True`. Five fields
are the classic `minute hour day month weekday`. Also accepted, as robfig/cron does:
the descriptors `@yearly @annually @monthly @weekly @daily @midnight @hourly`,
`@every DURATION` (a Go duration such as `90s` or `1h30m`), and a leading
`CRON_TZ=Zone` or `TZ=Zone` that overrides the time zone. A seventh (year) field, which
croniter would take, is refused: the reference has none.

Times are computed in the schedule's IANA zone (zoneinfo, with the `tzdata` package as
the fallback database in slim images), so daylight saving changes follow croniter's
documented behaviour: a time that falls in a spring-forward gap runs at the first valid
time after it, a time repeated by a fall-back runs once.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pcaptool.errors import UsageError
from pcaptool.log import Logger
from pcaptool.signals import StopSignals

# robfig/cron's predefined schedules (https://pkg.go.dev/github.com/robfig/cron/v3).
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# A Go time.ParseDuration string: one or more <number><unit>.
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_TZ_PREFIX = re.compile(r"^(?:CRON_TZ|TZ)=(\S+)\s+(.*)$", re.DOTALL)


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. `Europe/Paris`), or UsageError naming it."""
    try:
        if not name or name != name.strip():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UsageError(
            f"unknown time zone {name!r} (PCAP_TIMEZONE): use an IANA id such as UTC or America/New_York"
        ) from None


def parse_go_duration(text: str) -> int:
    """Nanoseconds of a Go duration string (`90s`, `1h30m`, `1.5h`); UsageError if malformed."""
    pos, total = 0, 0
    while pos < len(text):
        m = _GO_DURATION_PART.match(text, pos)
        if not m:
            raise UsageError(f"bad duration {text!r} in '@every': use e.g. 30s, 5m, 1h30m")
        number, unit = m.groups()
        whole, _, frac = number.partition(".")
        scale = _GO_UNIT_NS[unit]
        total += int(whole or 0) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = m.end()
    if not text:
        raise UsageError("'@every' needs a duration, e.g. '@every 30s'")
    return total


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule; `next_after(t)` is the first run time strictly after `t`."""

    expression: str
    zone: ZoneInfo
    cron: str | None = None  # the croniter expression (5 or 6 fields)
    seconds_first: bool = False
    every_s: int | None = None  # `@every`: whole seconds, as robfig/cron rounds it

    def next_after(self, when: datetime) -> datetime:
        from croniter import croniter

        local = when.astimezone(self.zone)
        if self.every_s is not None:
            # robfig/cron's ConstantDelaySchedule: the delay from the start of this second.
            return local.replace(microsecond=0) + timedelta(seconds=self.every_s)
        return croniter(self.cron, local, second_at_beginning=self.seconds_first).get_next(datetime)

    def times(self, start: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        t = start
        for _ in range(count):
            t = self.next_after(t)
            out.append(t)
        return out


def parse_schedule(expression: str, zone_name: str = "UTC") -> CronSchedule:
    """Parse a reference-style cron expression (see the module docstring) in `zone_name`.

    Raises UsageError with one line saying what is wrong.
    """
    from croniter import CroniterError, croniter

    text = " ".join(expression.split())
    if not text:
        raise UsageError(
            "empty cron expression (PCAP_CRON_EXP): e.g. '0 */5 * * * *' or '*/5 * * * *'"
        )
    m = _TZ_PREFIX.match(text)
    if m:
        zone_name, text = m.group(1), m.group(2)
    zone = load_zone(zone_name)

    if text.startswith("@every"):
        ns = parse_go_duration(text[len("@every") :].strip())
        # robfig/cron: at least one second, truncated to whole seconds.
        return CronSchedule(expression, zone, every_s=max(1, ns // 1_000_000_000))

    cron = DESCRIPTORS.get(text.lower(), text) if text.startswith("@") else text
    if cron.startswith("@"):
        raise UsageError(
            f"unknown cron descriptor {text!r}: use one of {', '.join(DESCRIPTORS)} or '@every 30s'"
        )
    fields = cron.split(" ")
    if len(fields) not in (5, 6):
        raise UsageError(
            f"cron expression {expression!r} has {len(fields)} fields: use 5 "
            "(minute hour day month weekday) or 6 with seconds first (second minute hour day month weekday)"
        )
    seconds_first = len(fields) == 6
    from pcaptool.sidecar.cronsyntax import check_fields

    check_fields(fields, expression)
    try:
        it = croniter(cron, datetime.now(zone), second_at_beginning=seconds_first)
        it.get_next(datetime)
    except (CroniterError, ValueError, KeyError, OverflowError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"invalid cron expression {expression!r}: {reason}") from None
    return CronSchedule(expression, zone, cron=cron, seconds_first=seconds_first)


# --------------------------------------------------------------------------- running


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


@dataclass
class _Run:
    number: int
    proc: subprocess.Popen
    scheduled: datetime
    started_mono: float
    deadline: float | None  # monotonic time of the timeout, None = no limit
    kill_at: float | None = None  # monotonic time of SIGKILL after a SIGTERM
    timed_out: bool = False


@dataclass
class Scheduler:
    """Runs `command` at each time of `schedule`; never two runs at once.

    `timeout_s` (0 = none) bounds each run: SIGTERM to the command, then SIGKILL to its
    whole process group `grace_s` later. A time that comes while a run is still going is
    skipped and logged. `stop()` (SIGTERM/SIGINT in the CLI) ends the running command the
    same way and returns. `max_runs` ends the loop after that many finished runs.
    """

    schedule: CronSchedule
    command: list[str]
    timeout_s: float = 0.0
    grace_s: float = 10.0
    max_runs: int | None = None
    log: Callable[..., None] = field(
        default_factory=lambda: Logger(timestamps=True, component="schedule")
    )
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        self._stopping = False
        self._forced = False
        self._run: _Run | None = None
        self._started = 0
        self._finished = 0
        self._failed = 0
        self._wake_r = self._wake_w = -1

    # -- signals -------------------------------------------------------------------
    def stop(self, force: bool = False) -> None:
        """Ask the loop to end (safe from a signal handler); `force` skips the grace."""
        self._forced = self._forced or (force and self._stopping)
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"\0")

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the loop gracefully (a second one skips the grace)."""

        StopSignals(on_signal=lambda signum: self.stop(force=True)).install()

    # -- main loop -----------------------------------------------------------------
    def run(self) -> int:
        """Loop until stopped (exit status 0) or `max_runs` are done (0 if all succeeded)."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        old_chld = signal.signal(signal.SIGCHLD, lambda s, f: self._wake())
        try:
            return self._loop()
        finally:
            signal.signal(signal.SIGCHLD, old_chld)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def _loop(self) -> int:
        next_time = self.schedule.next_after(self.now())
        self.log(
            "INFO",
            f"schedule {self.schedule.expression!r} ({self.schedule.zone.key}): next run at {_iso(next_time)}",
            event="scheduled",
            cron=self.schedule.expression,
            timezone=self.schedule.zone.key,
            timeout_secs=self.timeout_s,
            command=self.command,
            next_run=_iso(next_time),
        )
        while True:
            self._reap()
            if self._stopping:
                if self._run is not None:
                    self._terminate("scheduler stopping")
                    self._wait_current()
                self.log(
                    "INFO",
                    "scheduler stopped",
                    event="stopped",
                    runs=self._finished,
                    failed=self._failed,
                )
                return 0
            if self.max_runs is not None and self._finished >= self.max_runs:
                return 1 if self._failed else 0

            now = self.now()
            mono = time.monotonic()
            run = self._run
            if (
                run is not None
                and run.deadline is not None
                and not run.timed_out
                and mono >= run.deadline
            ):
                run.timed_out = True
                self._terminate(f"timeout after {self.timeout_s:g}s")
            if run is not None and run.kill_at is not None and mono >= run.kill_at:
                self._kill_group(run)

            if now >= next_time:
                scheduled = next_time
                # Catch up to the present: times missed while the process was frozen
                # (Cloud Run throttles CPU between requests) are not run in a burst.
                next_time = self.schedule.next_after(max(now, next_time))
                if self._run is not None:
                    self.log(
                        "WARNING",
                        f"run {self._run.number} still going at {_iso(scheduled)}: this run is skipped",
                        event="skipped",
                        run=self._run.number,
                        scheduled=_iso(scheduled),
                        next_run=_iso(next_time),
                    )
                elif self.max_runs is None or self._started < self.max_runs:
                    self._start(scheduled, next_time)
                continue

            self._sleep(self._until(next_time, now, mono))

    def _until(self, next_time: datetime, now: datetime, mono: float) -> float:
        waits = [(next_time - now).total_seconds()]
        run = self._run
        if run is not None:
            if run.deadline is not None and not run.timed_out:
                waits.append(run.deadline - mono)
            if run.kill_at is not None:
                waits.append(run.kill_at - mono)
            waits.append(1.0)  # a lost SIGCHLD costs at most a second
        # Wake at least every 30 s: wall-clock jumps (NTP, a frozen instance) are noticed.
        return max(0.0, min(*waits, 30.0))

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(InterruptedError):
                select.select([self._wake_r], [], [], seconds)
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # -- one run -------------------------------------------------------------------
    def _start(self, scheduled: datetime, next_time: datetime) -> None:
        self._started += 1
        number = self._started
        try:
            # Own session: the run's process group is killed as a whole on SIGKILL,
            # and a terminal's Ctrl-C reaches the scheduler, which decides.
            proc = subprocess.Popen(self.command, start_new_session=True)
        except OSError as exc:
            self._finished += 1
            self._failed += 1
            self.log(
                "ERROR",
                f"run {number} could not start: {exc}",
                event="end",
                run=number,
                exit_status=None,
                error=str(exc),
                next_run=_iso(next_time),
            )
            return
        mono = time.monotonic()
        self._run = _Run(
            number=number,
            proc=proc,
            scheduled=scheduled,
            started_mono=mono,
            deadline=mono + self.timeout_s if self.timeout_s > 0 else None,
        )
        self.log(
            "INFO",
            f"run {number} started (pid {proc.pid})",
            event="start",
            run=number,
            pid=proc.pid,
            scheduled=_iso(scheduled),
            next_run=_iso(next_time),
        )

    def _terminate(self, why: str) -> None:
        run = self._run
        if run is None or run.kill_at is not None:
            return
        self.log(
            "WARNING" if run.timed_out else "INFO",
            f"run {run.number}: {why}: SIGTERM to pid {run.proc.pid}, SIGKILL in {self.grace_s:g}s",
            event="timeout" if run.timed_out else "terminate",
            run=run.number,
            pid=run.proc.pid,
        )
        # SIGTERM to the command itself so it can stop in order (the sidecar's pipeline
        # stops capture first and lets the other stages drain); SIGKILL goes to the group.
        with contextlib.suppress(ProcessLookupError):
            run.proc.send_signal(signal.SIGTERM)
        run.kill_at = time.monotonic() + self.grace_s

    def _kill_group(self, run: _Run) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.proc.pid, signal.SIGKILL)
        run.kill_at = float("inf")

    def _wait_current(self) -> None:
        while self._run is not None:
            run = self._run
            mono = time.monotonic()
            if self._forced or (run.kill_at is not None and mono >= run.kill_at):
                self._kill_group(run)
            self._reap()
            if self._run is not None:
                self._sleep(min(0.2, max(0.0, (run.kill_at or mono) - mono)) or 0.05)

    def _reap(self) -> None:
        run = self._run
        if run is None or run.proc.poll() is None:
            return
        # The leader is gone; whatever it left in its group goes too, so the next run
        # never overlaps the leftovers of this one.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.proc.pid, signal.SIGKILL)
        code = run.proc.returncode
        self._run = None
        self._finished += 1
        # A run we asked to stop (timeout, shutdown) and that obeyed SIGTERM ended well.
        ok = code == 0 or (
            run.kill_at is not None and code in (-signal.SIGTERM, 128 + signal.SIGTERM)
        )
        if not ok:
            self._failed += 1
        duration = time.monotonic() - run.started_mono
        fields: dict[str, object] = {
            "event": "end",
            "run": run.number,
            "pid": run.proc.pid,
            "exit_status": code,
            "duration_secs": round(duration, 3),
            "timed_out": run.timed_out,
        }
        sig = _signal_name(code)
        if sig:
            fields["signal"] = sig
        if not self._stopping and (self.max_runs is None or self._finished < self.max_runs):
            fields["next_run"] = _iso(self.schedule.next_after(self.now()))
        how = f"killed by {sig}" if sig else f"exit status {code}"
        self.log(
            "INFO" if ok else "ERROR",
            f"run {run.number} ended: {how} after {duration:.1f}s",
            **fields,
        )


def next_times(schedule: CronSchedule, start: datetime, count: int) -> Iterator[datetime]:
    """The next `count` run times after `start` (for `pcaptool schedule --check`)."""
    yield from schedule.times(start, count)


def resolve_command(command: list[str]) -> list[str]:
    """The command with its program checked to exist and be executable (UsageError if not)."""
    if not command:
        raise UsageError(
            "no command to schedule: give it after '--', e.g. -- pcaptool capture -w x.pcap"
        )
    prog = command[0]
    found = shutil.which(prog)
    if found is None:
        raise UsageError(f"command not found or not executable: {prog!r}")
    return command
