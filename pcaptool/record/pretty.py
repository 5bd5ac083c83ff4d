"""`--pretty`: indented JSON for humans, at orjson's speed; colour only on a terminal.

orjson indents (2 spaces, as `jq .`); colour is a single regular-expression pass over
the indented text (keys blue, strings green, numbers and literals as jq colours them),
only when stdout is a terminal, so `--pretty | less` and `| head` get plain text.
"""

from __future__ import annotations

import os
import re
import sys
from typing import BinaryIO

import orjson

_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE

_TOKEN = re.compile(
    rb'(?P<key>"(?:[^"\\]|\\.)*"(?=: ))|(?P<str>"(?:[^"\\]|\\.)*")'
    rb"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<lit>\btrue\b|\bfalse\b|\bnull\b)"
)
# jq's default colours: keys 34;1, strings 32, numbers 0, true/false 39, null 1;30
_COLOURS = {"key": b"\x1b[34;1m", "str": b"\x1b[32m", "num": b"\x1b[0m", "lit": b"\x1b[39m"}
_RESET = b"\x1b[0m"


def _colour(match: re.Match) -> bytes:
    kind = match.lastgroup or "num"
    colour = b"\x1b[1;30m" if match.group(0) == b"null" else _COLOURS[kind]
    return colour + match.group(0) + _RESET


def want_colour(out: BinaryIO) -> bool:
    """A terminal, and NO_COLOR (no-color.org) not set."""
    try:
        tty = os.isatty(out.fileno())
    except (AttributeError, OSError, ValueError):
        tty = False
    return tty and not os.environ.get("NO_COLOR")


class PrettyWriter:
    """Writes each record indented; same interface as NdjsonWriter (write, flush, out)."""

    def __init__(self, out: BinaryIO | None = None, colour: bool | None = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.colour = want_colour(self.out) if colour is None else colour
        self._write = self.out.write

    def write(self, rec: dict) -> None:
        text = orjson.dumps(rec, option=_OPTIONS)
        self._write(_TOKEN.sub(_colour, text) if self.colour else text)

    def write_line(self, line: bytes) -> None:
        self.write(orjson.loads(line))

    def flush(self) -> None:
        self.out.flush()
