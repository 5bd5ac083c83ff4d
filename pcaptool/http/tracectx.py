"""Trace context from HTTP headers, as the fields Cloud Logging links to Cloud Trace.

- W3C Trace Context `traceparent: 00-<32 hex trace>-<16 hex span>-<2 hex flags>`
  (https://www.w3.org/TR/trace-context/#traceparent-header), sampled = flags & 1.
- Google's `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=OPTIONS` where SPAN_ID is a decimal
  unsigned 64-bit integer and o=1 means sampled
  (https://cloud.google.com/trace/docs/trace-context#legacy-http-header).

When both are present and valid, traceparent wins (it is what Cloud Run forwards and
what current Google client libraries read first). The result is the three special keys of
a structured log entry (https://cloud.google.com/logging/docs/structured-logging).
"""

from __future__ import annotations

import os
import re

TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_XCTC = re.compile(r"([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=(\d+))?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_ODD = "13579bdf"  # hex digits of odd values


def project_from_env() -> str | None:
    """The project trace names are qualified with, as the Cloud Run/GCE runtimes set it."""
    return os.environ.get("PROJECT_ID") or os.environ.get("GOOGLE_CLOUD_PROJECT") or None


def parse_traceparent(value: str) -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) of a valid traceparent, else None."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace, span, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return trace, span, flags[1] in _ODD  # sampled: flags & 1 (two lower-case hex digits)


def parse_xctc(value: str) -> tuple[str, str | None, bool | None] | None:
    """(trace id, span id as 16 hex digits or None, sampled or None) of
    X-Cloud-Trace-Context, else None."""
    m = _XCTC.fullmatch(value.strip())
    if m is None:
        return None
    trace, span, opts = m.groups()
    trace = trace.lower()
    if trace == _ZERO_TRACE:
        return None
    span_hex = None
    if span is not None:
        s = int(span)
        if s >= 1 << 64:
            return None
        span_hex = f"{s:016x}" if s else None
    sampled = None if opts is None else bool(int(opts) & 1)
    return trace, span_hex, sampled


def trace_fields(headers: dict[str, str], project: str | None) -> dict | None:
    """The Cloud Logging trace keys for a request's headers (lower-case names), or None."""
    tp = headers.get("traceparent")
    got = parse_traceparent(tp) if tp else None
    if got is None:
        xc = headers.get("x-cloud-trace-context")
        got = parse_xctc(xc) if xc else None
        if got is None:
            return None
    trace, span, sampled = got
    out = {TRACE_KEY: f"projects/{project}/traces/{trace}" if project else trace}
    if span is not None:
        out[SPAN_KEY] = span
    if sampled is not None:
        out[SAMPLED_KEY] = sampled
    return out
