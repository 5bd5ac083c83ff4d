"""Standard streams as a Unix tool uses them."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """`pcaptool translate x.pcap | head`: when the reader goes away, exit 0 without a word.

    stdout is pointed at /dev/null first so the interpreter's final flush cannot raise again.
    """
    try:
        yield
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


def refuse_terminal(stream, what: str = "binary capture data") -> None:
    """Never write pcap bytes to a terminal."""
    from pcaptool.errors import UsageError

    if stream.isatty():
        raise UsageError(
            f"refusing to write {what} to a terminal: redirect it to a file or a pipe (or use -w FILE)"
        )


def stdout_console():
    """A rich Console on stdout whose closed pipe ends the command like any other (exit 0):
    rich's own `on_broken_pipe` exits 1."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console()
