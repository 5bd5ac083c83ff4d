"""Record filter (`--where`) and field selection (`--fields`) on decoded records.

`--where` is the part of jq that `select(...)` users write most, with jq's meaning:

    http.status >= 500                    # jq: select(.http.status >= 500)
    .tcp and not .http                    # a leading dot is allowed, as in jq
    dns.qr == "response" or tls.sni ~ "example"
    .["logging.googleapis.com/trace"]     # keys with dots, as jq spells them
    dns.answers[0].type == "A"

Paths are jq paths (`.a.b`, `.["k"]`, `[N]`); a missing key is `null`. Literals are JSON
(numbers, "strings", true, false, null). Operators: `== != < <= > >=` compare as jq does
(null < false < true < numbers < strings < arrays < objects, so `http.status >= 500` is
false for a record without HTTP), `~` is a regular expression search (jq's `test()`),
`and`, `or`, `not`, parentheses. Truth is jq's: only `null` and `false` are false.
A bare word is a path, as in jq: strings are quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pcaptool.errors import UsageError

_MISSING = object()

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>==|!=|<=|>=|<|>|~|\(|\)|\[|\]|\.)
    | (?P<word>[A-Za-z_][A-Za-z0-9_\-/]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false", "null"}
_COMPARE = {"==", "!=", "<", "<=", ">", ">=", "~"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise UsageError(f"--where: cannot read {text[pos:].strip()[:20]!r} in {text!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _unquote(tok: str) -> str:
    import json

    body = tok[1:-1]
    if tok[0] == "'":
        body = body.replace('\\"', '"').replace("\\'", "'").replace('"', '\\"')
    return json.loads(f'"{body}"')


def _type_rank(v: Any) -> int:
    if v is None or v is _MISSING:
        return 0
    if v is False:
        return 1
    if v is True:
        return 2
    if isinstance(v, int | float):
        return 3
    if isinstance(v, str):
        return 4
    return 5 if isinstance(v, list) else 6


def _cmp(a: Any, b: Any) -> int:
    """jq's total order (numbers and strings by value, other kinds by rank)."""
    ra, rb = _type_rank(a), _type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra in (3, 4):
        return (a > b) - (a < b)
    if ra in (5, 6):
        return 0 if a == b else (-1 if repr(a) < repr(b) else 1)
    return 0


def get_path(rec: Any, path: tuple) -> Any:
    """The value at `path` (keys and list indexes), or None when any step is missing."""
    for step in path:
        if isinstance(step, int):
            rec = rec[step] if isinstance(rec, list) and -len(rec) <= step < len(rec) else None
        else:
            rec = rec.get(step) if isinstance(rec, dict) else None
        if rec is None:
            return None
    return rec


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise UsageError(f"--where: {self.text!r} ends too early")
        self.i += 1
        return tok

    def fail(self, what: str) -> UsageError:
        return UsageError(f"--where: {what} in {self.text!r}")

    def parse(self) -> Callable[[dict], Any]:
        fn = self.or_()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return fn

    def or_(self):
        left = self.and_()
        while self.peek() == ("word", "or"):
            self.take()
            left = (lambda a, b: lambda r: _truthy(a(r)) or _truthy(b(r)))(left, self.and_())
        return left

    def and_(self):
        left = self.not_()
        while self.peek() == ("word", "and"):
            self.take()
            left = (lambda a, b: lambda r: _truthy(a(r)) and _truthy(b(r)))(left, self.not_())
        return left

    def not_(self):
        if self.peek() == ("word", "not"):
            self.take()
            inner = self.not_()
            return lambda r: not _truthy(inner(r))
        return self.compare()

    def compare(self):
        left = self.operand()
        tok = self.peek()
        if tok is None or tok[0] != "op" or tok[1] not in _COMPARE:
            return left
        op = self.take()[1]
        right = self.operand()
        if op == "~":
            return self._regex(left, right)
        test = {
            "==": lambda c: c == 0,
            "!=": lambda c: c != 0,
            "<": lambda c: c < 0,
            "<=": lambda c: c <= 0,
            ">": lambda c: c > 0,
            ">=": lambda c: c >= 0,
        }[op]
        return lambda r: test(_cmp(left(r), right(r)))

    def _regex(self, left, right):
        pattern = right({})
        if not isinstance(pattern, str):
            raise self.fail("~ needs a quoted regular expression on its right")
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise self.fail(f"bad regular expression {pattern!r} ({exc})") from None
        return lambda r: isinstance(v := left(r), str) and rx.search(v) is not None

    def operand(self):
        kind, text = self.take()
        if kind == "num":
            value = float(text) if any(c in text for c in ".eE") else int(text)
            return lambda r: value
        if kind == "str":
            s = _unquote(text)
            return lambda r: s
        if kind == "word" and text in ("true", "false", "null"):
            const = {"true": True, "false": False, "null": None}[text]
            return lambda r: const
        if (kind, text) == ("op", "("):
            inner = self.or_()
            if self.peek() != ("op", ")"):
                raise self.fail("missing ')'")
            self.take()
            return inner
        if kind == "word" and text not in _KEYWORDS or (kind, text) in (("op", "."), ("op", "[")):
            self.i -= 1
            path = self.path()
            return lambda r: get_path(r, path)
        raise self.fail(f"unexpected {text!r}")

    def path(self) -> tuple:
        steps: list = []
        while True:
            tok = self.peek()
            if tok == ("op", "."):
                self.take()
                nxt = self.peek()
                if nxt is not None and nxt[0] == "word":
                    steps.append(self.take()[1])
                elif nxt == ("op", "["):
                    continue
                elif not steps:
                    continue  # `.` alone before a key: `.["k"]`
            elif tok is not None and tok[0] == "word" and not steps and tok[1] not in _KEYWORDS:
                steps.append(self.take()[1])
            elif tok == ("op", "["):
                self.take()
                kind, text = self.take()
                if kind == "str":
                    steps.append(_unquote(text))
                elif kind == "num" and text.lstrip("-").isdigit():
                    steps.append(int(text))
                else:
                    raise self.fail(f"[{text}] must be a quoted key or an index")
                if self.take() != ("op", "]"):
                    raise self.fail("missing ']'")
            else:
                break
        if not steps:
            raise self.fail("empty path")
        return tuple(steps)


def _truthy(v: Any) -> bool:
    return v is not None and v is not False and v is not _MISSING


def compile_where(text: str) -> Callable[[dict], bool]:
    """`--where EXPR` as a predicate on records; UsageError (one line) when it does not parse."""
    fn = _Parser(text).parse()
    return lambda rec: _truthy(fn(rec))


def parse_fields(text: str) -> list[tuple]:
    """`pcap.num,ip.src,http.status` (jq paths too) as a list of paths."""
    paths = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parser = _Parser(item)
        path = parser.path()
        if parser.peek() is not None:
            raise UsageError(f"--fields: {item!r} is not a field path (e.g. ip.src)")
        paths.append(path)
    if not paths:
        raise UsageError("--fields: name at least one field, e.g. --fields pcap.num,ip.src")
    return paths


def project(rec: dict, paths: list[tuple]) -> dict:
    """The record with only `paths` kept, nesting kept (`{"ip": {"src": …}}`), missing left out."""
    out: dict = {}
    for path in paths:
        value = get_path(rec, path)
        if value is None:
            continue
        node = out
        keys = [str(s) for s in path]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


class SelectingWriter:
    """A record writer seen through `--where` and `--fields`; lines from workers too."""

    def __init__(self, inner, where: Callable[[dict], bool] | None, fields: list[tuple] | None):
        self.inner = inner
        self.out = inner.out
        self.where = where
        self.fields = fields

    def write(self, rec: dict) -> None:
        if self.where is not None and not self.where(rec):
            return
        self.inner.write(project(rec, self.fields) if self.fields else rec)

    def write_lines(self, blob: bytes) -> None:
        """NDJSON lines as parallel workers hand them over."""
        import orjson

        for line in blob.splitlines():
            if line:
                self.write(orjson.loads(line))

    def flush(self) -> None:
        self.inner.flush()
