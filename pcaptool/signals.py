"""SIGTERM/SIGINT as a request to finish up, visible to a `select()` loop and to threads.

Cloud Run sends SIGTERM and allows 10 s before SIGKILL; pipeline stages treat it like end
of input: finish the file in hand, drain what is already on the way, exit 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time


class StopSignals:
    """Context manager: SIGTERM/SIGINT set `event` and make `fd` readable.

    `fd` (the read end of a pipe fed by `signal.set_wakeup_fd`) lets a `select()` on the
    input return at once, since PEP 475 retries an interrupted `select()` otherwise.
    Outside the main thread (e.g. under a test runner) it only provides the event.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.at: float | None = None  # time.monotonic() of the first signal
        self.fd: int | None = None
        self._write_fd: int | None = None
        self._saved: dict[int, object] = {}
        self._saved_wakeup = -1

    def _handler(self, signum, frame) -> None:
        if self.at is None:
            self.at = time.monotonic()
        self.event.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        os.set_blocking(self.fd, False)
        self._saved_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in self.SIGNALS:
            self._saved[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        for sig, old in self._saved.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._saved_wakeup)
        os.close(self.fd)
        os.close(self._write_fd)
        self.fd = self._write_fd = None

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
