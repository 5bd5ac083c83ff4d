"""`--pretty`: indented JSON for humans, at orjson's speed; colour only on a terminal.

orjson indents (2 spaces, as `jq .`); colour (jq's: keys blue, strings green, null grey)
is a few regex passes over the indented text, only when stdout is a terminal and
NO_COLOR is not set, so `--pretty | less` and `| head` get plain text at orjson's speed.
"""

from __future__ import annotations

import os
import re
import sys
from typing import BinaryIO

import orjson

_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE

# orjson's indented output has one key or one scalar per line (`"k": V,`, or `V,` in an
# array) and escapes every control character, so bytes 0x01-0x04 never occur in it.
# Colouring is a few dozen whole-text passes in C, each a constant replacement found by a
# literal, so the searches skip through the text as memchr does (Python 3.11 expands a
# template with groups in Python, once per match; a per-line loop is slower still):
# - the escaped backslashes and quotes are masked, so that every remaining quote delimits
#   a string;
# - a mark goes at each line's start and is moved past the indentation (deepest first),
#   onto the line's first token, whose first byte (and for a string, whether it is the
#   whole line) says its colour; with that string's opening quote held aside, the first
#   `": ` on a line ends its key, and `": X` colours the value X after it;
# - a reset goes where each line's token ends, before its comma.
# The colours are jq 1.6's defaults (`jq -C`): keys 34;1, strings 0;32, numbers and
# booleans 0;39, null 1;30, brackets and braces 1;39.
_KEY, _STR, _NUM, _NULL, _BRACKET = (
    b"\x1b[" + c + b"m" for c in (b"34;1", b"0;32", b"0;39", b"1;30", b"1;39")
)
_RESET = b"\x1b[0m"
_MASKS = ((b"\\\\", b"\x01"), (b'\\"', b"\x02"))  # \\ first: `\\"` ends a string
_MARK = b"\x03"
_OPEN = b"\x04"  # a string's opening quote, held aside until the end
# a string that is a whole line is an array's element (rare); any other is a key
_ELEMENT_AT_MARK = re.compile(rb'\x03"(?=[^"\n]*",?(?:\x1b\[0m\n|$))')
_AT_MARK = [(_MARK + b'"', _KEY + _OPEN), (_MARK + b"n", _NULL + b"n")] + [
    (_MARK + c, _BRACKET + c) for c in (b"{", b"}", b"[", b"]")
]
_AFTER_KEY = [
    (b'": "', b'"' + _RESET + b": " + _STR + _OPEN),
    (b'": n', b'"' + _RESET + b": " + _NULL + b"n"),
    (b'": {', b'"' + _RESET + b": " + _BRACKET + b"{"),
    (b'": [', b'"' + _RESET + b": " + _BRACKET + b"["),
    (b'": ', b'"' + _RESET + b": " + _NUM),  # what is left: numbers, true and false
]


def paint(text: bytes) -> bytes:
    """orjson-indented JSON objects (one or more, joined by newlines, no final newline)
    with jq's colours."""
    masked = b"\\" in text
    if masked:
        for escape, mask in _MASKS:
            text = text.replace(escape, mask)
    # a reset where each line's token ends (moved before its comma below), a mark where
    # the next one starts
    text = text.replace(b"\n", _RESET + b"\n" + _MARK)
    depth = 1
    while b"\n" + _MARK + b"  " * (depth + 1) in text:
        depth += 1
    for d in range(depth, 0, -1):
        text = text.replace(_MARK + b"  " * d, b"  " * d + _MARK)
    text = _ELEMENT_AT_MARK.sub(_STR + _OPEN, text)
    for marked, coloured in _AT_MARK:
        text = text.replace(marked, coloured)
    text = text.replace(_MARK, _NUM)  # what is left: numbers, true and false
    for sep, coloured in _AFTER_KEY:
        text = text.replace(sep, coloured)
    text = text.replace(b"," + _RESET, _RESET + b",")
    text = text.replace(_OPEN, b'"')
    if masked:
        for escape, mask in reversed(_MASKS):
            text = text.replace(mask, escape)
    return _BRACKET + text + _RESET  # records are objects: `{` ... `}`


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
        if self.colour:  # painted a record at a time: a batch costs no less (bench/pretty.py)
            self._write(paint(orjson.dumps(rec, option=orjson.OPT_INDENT_2)) + b"\n")
        else:
            self._write(orjson.dumps(rec, option=_OPTIONS))

    def write_line(self, line: bytes) -> None:
        self.write(orjson.loads(line))

    def flush(self) -> None:
        self.out.flush()
