"""The readiness signal for Cloud Run's TCP startup probe and Docker's HEALTHCHECK.

`capture` creates the ready file once every handle is open with its filter applied and
removes it when it ends (see `pcaptool.sidecar.capture.ReadyFile`). `serve` turns that file into a
TCP port: while the file exists the port is bound and listening (each connection is
accepted and closed at once); while it does not, no socket is bound, so a probe's SYN is
answered with RST ("connection refused"), not left hanging. The file is polled every
`poll` seconds; a stale file (its pid no longer running) counts as not ready.
"""

from __future__ import annotations

import json
import os
import select
import socket
from pathlib import Path

from pcaptool.signals import StopSignals

POLL_SECONDS = 0.2


def is_ready(ready_file: str | os.PathLike) -> bool:
    """The ready file exists and the process that wrote it is still alive."""
    path = Path(ready_file)
    try:
        text = path.read_text()
    except OSError:
        return False
    try:
        pid = int(json.loads(text).get("pid", 0))
    except (ValueError, AttributeError):
        return True  # written by something else: its existence is the signal
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # capture was killed without cleaning up
    except PermissionError:
        return True
    return True


def port_accepts(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def serve(
    ready_file: str | os.PathLike,
    port: int,
    host: str = "0.0.0.0",
    poll: float = POLL_SECONDS,
    log=None,
) -> None:
    """Listen on `port` exactly while the ready file says capture runs; until SIGTERM/SIGINT."""
    stop = StopSignals().install()
    sock: socket.socket | None = None
    try:
        while not stop.stopping:
            ready = is_ready(ready_file)
            if ready and sock is None:
                try:
                    sock = _listen(host, port)
                except OSError as exc:
                    if log:
                        log("WARNING", f"cannot listen on {host}:{port}: {exc.strerror}")
                    _pause(poll)
                    continue
                if log:
                    log("INFO", "capture is ready: health port open", port=port)
            elif not ready and sock is not None:
                sock.close()
                sock = None
                if log:
                    log("INFO", "capture is not running: health port closed", port=port)
            if sock is None:
                _pause(poll)
                continue
            try:
                readable, _, _ = select.select([sock], [], [], poll)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            if readable:
                _accept_all(sock)
    finally:
        if sock is not None:
            sock.close()
        stop.restore()


def _pause(seconds: float) -> None:
    # Not time.sleep: since Python 3.11 it is an absolute CLOCK_MONOTONIC clock_nanosleep,
    # which libfaketime (the clock-step tests) refuses with EINVAL; select's relative
    # timeout is the same wait everywhere.
    select.select([], [], [], seconds)


def _accept_all(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        conn.close()
