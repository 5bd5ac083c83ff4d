"""Standard streams as a Unix tool uses them."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def silence_stdout() -> None:
    """Point fd 1 at /dev/null: the reader went away, and the interpreter's last flush of
    what is still buffered must not raise BrokenPipeError again (or print a warning)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


@contextlib.contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """`pcaptool translate x.pcap | head`: when the reader goes away, exit 0 without a word."""
    try:
        yield
    except BrokenPipeError:
        silence_stdout()
        sys.exit(0)


def refuse_terminal(stream=None, what: str = "capture bytes", instead: str = "-w FILE") -> None:
    """Never write pcap bytes to a terminal (stdout by default)."""
    from pcaptool.errors import UsageError

    stream = sys.stdout if stream is None else stream
    if stream.isatty():
        raise UsageError(
            f"refusing to write {what} to a terminal: redirect it to a file or a pipe "
            f"(or use {instead})"
        )


def stdout_console():
    """A rich Console on stdout whose closed pipe ends the command like any other (exit 0):
    rich's own `on_broken_pipe` exits 1."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console()
