"""SIGTERM/SIGINT as a request to finish up: the one stop-signal helper of every stage.

Cloud Run sends SIGTERM and allows 10 s before SIGKILL; a container runtime or
`kill -- -PGID` signals the whole process group at once, and an interactive user sends
SIGINT. Every stage treats either like end of input: finish the file in hand, drain
what is already on the way, exit 0.

`StopSignals` is visible three ways: an `event` for threads, a readable `fd` for a
`select()` loop (PEP 475 retries an interrupted `select()`, so the loop needs a
descriptor to wake on), and an optional `on_signal(signum)` callback, called for every
signal (a second one may mean "hurry").
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable


class StopSignals:
    """Context manager (or `install()`/`restore()`): SIGTERM/SIGINT set `event` and wake `fd`.

    - `restart`: interrupted system calls resume (SA_RESTART) instead of failing, for C
      loops (libpcap's dump) that would give up half-way; `fd` still wakes `select()`.
    - `ignore_repeats`: once a stop was asked for, signals stay ignored after `restore()`,
      so a repeated SIGTERM (a supervisor that signals twice, the whole process group)
      cannot turn the clean stop into a kill (exit 143).

    Outside the main thread (a test runner) no handler is installed; `fd` and `event`
    still exist, and `trigger()` stops it by hand.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(
        self,
        on_signal: Callable[[int], None] | None = None,
        restart: bool = False,
        ignore_repeats: bool = False,
    ) -> None:
        self.event = threading.Event()
        self.signal: int | None = None  # the first signal received
        self.at: float | None = None  # time.monotonic() of the first signal
        self.fd: int | None = None
        self.on_signal = on_signal
        self.restart = restart
        self.ignore_repeats = ignore_repeats
        self._write_fd: int | None = None
        self._saved: dict[int, object] = {}
        self._saved_wakeup: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def install(self) -> StopSignals:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        os.set_blocking(self.fd, False)
        if threading.current_thread() is not threading.main_thread():
            return self
        self._saved_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in self.SIGNALS:
            self._saved[sig] = signal.signal(sig, self._handler)
            if self.restart:
                signal.siginterrupt(sig, False)
        return self

    def restore(self) -> None:
        if self.fd is None:
            return
        for sig, old in self._saved.items():
            keep_ignoring = self.ignore_repeats and self.stopping
            signal.signal(sig, signal.SIG_IGN if keep_ignoring else old)  # type: ignore[arg-type]
        self._saved.clear()
        if self._saved_wakeup is not None:
            signal.set_wakeup_fd(self._saved_wakeup)
            self._saved_wakeup = None
        os.close(self.fd)
        os.close(self._write_fd)
        self.fd = self._write_fd = None

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    # ------------------------------------------------------------------ signals
    def _handler(self, signum: int, frame: object) -> None:
        self.trigger(signum)

    def trigger(self, signum: int = signal.SIGTERM) -> None:
        """What a signal does; callable by hand (tests, a supervisor thread)."""
        if self.signal is None:
            self.signal = signum
            self.at = time.monotonic()
        self.event.set()
        if self._write_fd is not None:  # by hand, no wakeup fd wrote it
            with contextlib.suppress(OSError):
                os.write(self._write_fd, b"\0")
        if self.on_signal is not None:
            self.on_signal(signum)

    def drain(self) -> None:
        """Empty the wakeup pipe so the next `select()` waits again."""
        if self.fd is None:
            return
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.event.wait(timeout)


def outlast_stop_signals() -> None:
    """SIGTERM/SIGINT do nothing in this process: it stops at the end of its input (a
    stage whose upstream stops first, e.g. relay), so a signal to the whole group cannot
    end it before it drained. A handler, not SIG_IGN: children start with the defaults."""
    for sig in StopSignals.SIGNALS:
        signal.signal(sig, lambda signum, frame: None)
