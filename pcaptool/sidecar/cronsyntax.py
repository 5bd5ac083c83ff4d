"""Exactly the cron fields the reference sidecar's robfig/cron (v3) parser accepts.

croniter, which computes the times, accepts more (`L`, `#`, `W`, `H`, day-of-week 7, a
year field); a schedule the reference would refuse must be refused here too, in one
line. Grammar per field (robfig/cron parser.go `getField`): a comma-separated list of
`*` or `?`, `N`, `N-M`, each optionally `/STEP`; months and weekdays also by
three-letter name. Bounds: second 0-59, minute 0-59, hour 0-23, day 1-31, month 1-12,
weekday 0-6.
"""

from __future__ import annotations

import re

from pcaptool.errors import UsageError

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, low, high, names)
_FIELDS = [
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
]
_PART = re.compile(r"^(?P<range>\*|\?|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _value(text: str, name: str, low: int, high: int, names: dict, expression: str) -> int:
    if text.isdigit():
        value = int(text)
    elif text.lower() in names:
        value = names[text.lower()]
    else:
        raise UsageError(
            f"invalid cron expression {expression!r}: {text!r} in the {name} field is not a number"
            + (" or a name" if names else "")
            + " (L, W, # and H are not cron syntax the reference accepts)"
        )
    if not low <= value <= high:
        raise UsageError(
            f"invalid cron expression {expression!r}: {name} {value} is out of range {low}-{high}"
        )
    return value


def check_fields(fields: list[str], expression: str) -> None:
    """Raise UsageError unless robfig/cron accepts these 5 or 6 (seconds first) fields."""
    specs = _FIELDS if len(fields) == 6 else _FIELDS[1:]
    for text, (name, low, high, names) in zip(fields, specs, strict=True):
        for part in text.split(","):
            m = _PART.match(part)
            if not m:
                raise UsageError(
                    f"invalid cron expression {expression!r}: cannot read {part!r} in the {name} field "
                    "(use *, ?, N, N-M, lists and /STEP; L, W, # and H are not accepted)"
                )
            if m.group("step") is not None and int(m.group("step")) == 0:
                raise UsageError(
                    f"invalid cron expression {expression!r}: step 0 in the {name} field"
                )
            span = m.group("range")
            if span in ("*", "?"):
                continue
            bounds = [_value(v, name, low, high, names, expression) for v in span.split("-")]
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                raise UsageError(
                    f"invalid cron expression {expression!r}: range {span} in the {name} field runs "
                    "backwards"
                )
