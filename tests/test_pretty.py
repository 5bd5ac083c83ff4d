"""`--pretty`: jq's colours on a terminal, computed by whole-text passes (record/pretty.py),
checked against a colouriser written the plain way, token by token; plain text off one."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
from pathlib import Path

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import PCAPTOOL, pcaptool_env
from pcaptool.record.pretty import PrettyWriter, paint

GOLDEN = Path(__file__).resolve().parent / "golden"
KEY, STR, NUM, NULL, BRACKET, RESET = (
    b"\x1b[34;1m", b"\x1b[0;32m", b"\x1b[0;39m", b"\x1b[1;30m", b"\x1b[1;39m", b"\x1b[0m"
)  # fmt: skip
ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def expected(value) -> bytes:
    """The colours `jq -C` gives each token, on orjson's 2-space layout: a colour right
    before each key, value and bracket, a reset right after it (before its comma)."""
    lines: list[bytes] = []

    def emit(v, indent: int, lead: bytes, comma: bytes) -> None:
        pad = b" " * (indent + 2)
        if isinstance(v, dict | list) and v:
            opening, closing = (b"{", b"}") if isinstance(v, dict) else (b"[", b"]")
            lines.append(lead + BRACKET + opening + RESET)
            items = list(v.items()) if isinstance(v, dict) else [(None, x) for x in v]
            for i, (k, x) in enumerate(items):
                key = b"" if k is None else KEY + orjson.dumps(k) + RESET + b": "
                emit(x, indent + 2, pad + key, b"," if i < len(items) - 1 else b"")
            lines.append(b" " * indent + BRACKET + closing + RESET + comma)
            return
        if isinstance(v, dict | list):
            colour = BRACKET
        elif isinstance(v, str):
            colour = STR
        elif v is None:
            colour = NULL
        else:
            colour = NUM
        lines.append(lead + colour + orjson.dumps(v) + RESET + comma)

    emit(value, 0, b"", b"")
    return b"\n".join(lines)


# strings that would fool a colouriser reading JSON text: quotes, backslashes before a
# closing quote, `": ` inside, commas and brackets at the end, control characters
tricky = st.text(alphabet=st.sampled_from(list('a"\\:, {}[]\n\t\x1bn0-é') + ["\u2028"]))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4)
)
records = st.dictionaries(tricky, values, max_size=6)


@settings(max_examples=400, deadline=None)
@given(records)
@example({": ": None})  # `": ` at a key's opening quote
@example({"": ": "})  # and at a value's
@example({"a\\": ['"', "\\", ""]})  # a backslash before a closing quote; elements
def test_paint_colours_every_token_as_jq(rec) -> None:
    text = orjson.dumps(rec, option=orjson.OPT_INDENT_2)
    painted = paint(text)
    assert painted == expected(rec)
    assert ANSI.sub(b"", painted) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(records, min_size=1, max_size=5))
def test_records_joined_are_painted_as_one_by_one(recs) -> None:
    out = io.BytesIO()
    w = PrettyWriter(out, colour=True)
    for rec in recs:
        w.write(rec)
    joined = paint(b"\n".join(orjson.dumps(r, option=orjson.OPT_INDENT_2) for r in recs))
    assert out.getvalue() == joined + b"\n" == b"".join(expected(r) + b"\n" for r in recs)


def _on_a_pty(args: list[str], env: dict[str, str]) -> bytes:
    master, slave = pty.openpty()
    proc = subprocess.Popen([*PCAPTOOL, *args], stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    proc.stderr.close()
    return bytes(out).replace(b"\r\n", b"\n")  # the terminal's output processing


def test_colour_on_a_terminal_and_none_in_a_pipe() -> None:
    args = ["translate", "--pretty", str(GOLDEN / "dns_tls.pcap")]
    env = {k: v for k, v in pcaptool_env().items() if k != "NO_COLOR"}
    coloured = _on_a_pty(args, env)
    piped = subprocess.run([*PCAPTOOL, *args], capture_output=True, env=env, check=True).stdout
    assert b"\x1b[" not in piped
    assert KEY + b'"timestamp"' + RESET in coloured and STR in coloured and NUM in coloured
    assert ANSI.sub(b"", coloured) == piped
    # each record coloured token by token: objects end with `}` alone at column 0
    chunks = piped.split(b"\n}\n")
    assert chunks[-1] == b"" and len(chunks) > 2
    records = [orjson.loads(c + b"\n}") for c in chunks[:-1]]
    assert coloured == b"".join(expected(r) + b"\n" for r in records)
    # NO_COLOR (no-color.org) turns it off on a terminal too
    assert b"\x1b[" not in _on_a_pty(args, env | {"NO_COLOR": "1"})
