"""Structured log lines on stderr: one JSON object per line, as Cloud Logging reads them.

Every stage logs the same way: ``severity`` and ``message`` (Cloud Logging's special keys)
then the stage's own fields. ``log()`` is the process-wide logger; ``Logger`` binds a
stream and fixed fields (``component``, a ``time`` stamp) for a stage that wants them::

    from pcaptool.log import log
    log("INFO", "capture finished", packets=12)

A reader that went away (closed stderr) never turns a log line into a crash.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime
from typing import IO

import orjson

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT")
_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _default(value: object) -> object:
    """What orjson cannot encode by itself (paths, sets, exceptions) becomes text."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode(severity: str, message: str, fields: dict) -> bytes:
    """One log line (bytes, newline included)."""
    record = {"severity": severity, "message": message, **fields}
    return orjson.dumps(record, default=_default, option=_OPTIONS)


class Logger:
    """Callable ``log(severity, message, **fields)`` writing to STREAM (default: stderr).

    ``fields`` are added to every line; ``timestamps`` adds ``time`` (RFC 3339, ms, UTC).
    Lines from several threads never interleave.
    """

    def __init__(self, stream: IO | None = None, timestamps: bool = False, **fields: object):
        self.stream = stream
        self.timestamps = timestamps
        self.fields = fields
        self._lock = threading.Lock()

    def __call__(self, severity: str, message: str, **fields: object) -> None:
        from pcaptool.verbosity import should_log

        if not should_log(severity):  # -q / -v of the command
            return
        extra: dict = {}
        if self.timestamps:
            extra["time"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        line = encode(severity, message, {**extra, **self.fields, **fields})
        out = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            try:
                buffer = getattr(out, "buffer", None)
                if buffer is not None:
                    out.flush()  # text already written must come first
                    buffer.write(line)
                    buffer.flush()
                else:
                    out.write(line.decode())
                    out.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # stderr closed: nothing to tell anyone any more


log = Logger()
