"""Trace context headers to Cloud Logging's trace fields."""

from __future__ import annotations

import pytest

from pcaptool.http.tracectx import (
    SAMPLED_KEY,
    SPAN_KEY,
    TRACE_KEY,
    parse_traceparent,
    parse_xctc,
    project_from_env,
    trace_fields,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_xctc_decimal_span_becomes_16_hex_digits():
    assert parse_xctc(f"{TRACE}/1;o=1") == (TRACE, "0000000000000001", True)
    assert parse_xctc(f"{TRACE}/18446744073709551615;o=0") == (TRACE, "ffffffffffffffff", False)
    assert parse_xctc(f"{TRACE.upper()}/12345") == (TRACE, f"{12345:016x}", None)
    assert parse_xctc(TRACE) == (TRACE, None, None)


@pytest.mark.parametrize(
    "bad", ["", "nothex", f"{TRACE}/18446744073709551616", "0" * 32 + "/1;o=1", f"{TRACE}/x"]
)
def test_xctc_invalid(bad):
    assert parse_xctc(bad) is None


def test_traceparent():
    assert parse_traceparent(f"00-{TRACE}-00f067aa0ba902b7-01") == (TRACE, "00f067aa0ba902b7", True)
    assert parse_traceparent(f"00-{TRACE}-00f067aa0ba902b7-00")[2] is False
    # a future version may append fields
    assert parse_traceparent(f"01-{TRACE}-00f067aa0ba902b7-03-extra")[2] is True


@pytest.mark.parametrize(
    "bad",
    [
        f"ff-{TRACE}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE}-0000000000000000-01",
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",
    ],
)
def test_traceparent_invalid(bad):
    assert parse_traceparent(bad) is None


def test_fields_with_project_and_precedence():
    h = {
        "x-cloud-trace-context": "11111111111111111111111111111111/7;o=0",
        "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01",
    }
    assert trace_fields(h, "proj") == {
        TRACE_KEY: f"projects/proj/traces/{TRACE}",
        SPAN_KEY: "00f067aa0ba902b7",
        SAMPLED_KEY: True,
    }
    del h["traceparent"]
    assert trace_fields(h, None) == {
        TRACE_KEY: "11111111111111111111111111111111",
        SPAN_KEY: "0000000000000007",
        SAMPLED_KEY: False,
    }
    assert trace_fields({"host": "x"}, "p") is None
    # an invalid traceparent falls back to X-Cloud-Trace-Context
    h["traceparent"] = "garbage"
    assert trace_fields(h, "p")[SPAN_KEY] == "0000000000000007"


def test_project_from_env(monkeypatch):
    monkeypatch.delenv("PROJECT_ID", raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "g")
    assert project_from_env() == "g"
    monkeypatch.setenv("PROJECT_ID", "p")
    assert project_from_env() == "p"
