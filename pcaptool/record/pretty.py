"""`--pretty`: indented JSON for humans, at orjson's speed; colour only on a terminal.

orjson indents (2 spaces, as `jq .`); colour (jq's: keys blue, strings green, null grey)
is one pass over the indented lines, only when stdout is a terminal and NO_COLOR is not
set, so `--pretty | less` and `| head` get plain text at orjson's speed.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

import orjson

_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE

# orjson's indented output has one key or one scalar per line (`"k": V,`, or `V,` in an
# array), so colouring is a pass over lines, with no JSON parsing. jq's default colours.
_KEY, _STR, _NUM, _BOOL, _NULL = (
    b"\x1b[" + c + b"m" for c in (b"34;1", b"32", b"0", b"39", b"1;30")
)
_RESET = b"\x1b[0m"


def _string_end(body: bytes) -> int:
    """Index just past the JSON string that `body` starts with."""
    i = body.find(b'"', 1)
    while i > 0:
        if body[i - 1] != 0x5C:  # no backslash before it: the common case
            return i + 1
        slashes = len(body[:i]) - len(body[:i].rstrip(b"\\"))
        if slashes % 2 == 0:
            return i + 1
        i = body.find(b'"', i + 1)
    return len(body)


def _value(v: bytes) -> bytes:
    comma = v.endswith(b",")
    core = v[:-1] if comma else v
    first = core[:1]
    if first == b'"':
        colour = _STR
    elif core in (b"true", b"false"):
        colour = _BOOL
    elif core == b"null":
        colour = _NULL
    elif first and first in b"-0123456789":
        colour = _NUM
    else:  # { [ } ] {} []
        return v
    return colour + core + _RESET + (b"," if comma else b"")


def paint(text: bytes) -> bytes:
    """orjson-indented JSON with jq's colours."""
    out = []
    for line in text.split(b"\n"):
        body = line.lstrip(b" ")
        indent = line[: len(line) - len(body)]
        if body[:1] == b'"':
            end = _string_end(body)
            if body[end : end + 2] == b": ":
                out.append(indent + _KEY + body[:end] + _RESET + b": " + _value(body[end + 2 :]))
                continue
        out.append(indent + _value(body))
    return b"\n".join(out)


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
        self._write(paint(text) if self.colour else text)

    def write_line(self, line: bytes) -> None:
        self.write(orjson.loads(line))

    def flush(self) -> None:
        self.out.flush()
