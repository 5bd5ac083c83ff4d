"""PCAP_VERBOSITY: how much each JSON record holds (Cloud Logging bills by the byte).

``DEBUG`` (the default, as the reference sidecar's) writes records whole. ``INFO`` keeps
the envelope (timestamp, severity, message, labels, operation, trace fields, pcap, flow),
the L3/L4 headers without their options (arp, ip, icmp, tcp, udp), the DNS, TLS and
connection summaries, and the HTTP summary (method, target, host, status, latency, sizes,
the trace context, ``httpRequest``); it drops the link layer (``l2``, ``encap``), header
options (``ip.ext``, ``tcp.options``, ``icmp.options``, ``dns.edns.options``), HTTP
headers, trailers and body samples, and HTTP/2 frame lists (``http2.frames``).
"""

from __future__ import annotations

from collections.abc import Callable

LEVELS = ("INFO", "DEBUG")
DEFAULT = "DEBUG"

_INFO_DROP_TOP = ("l2", "encap")
_INFO_DROP_SUB = {"ip": ("ext",), "tcp": ("options",), "icmp": ("options",)}
_HTTP_DETAIL = ("headers", "trailers", "body_sample")


def parse_level(value: str) -> str:
    """The level named by `value` (any case); ValueError on anything else."""
    level = value.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"verbosity {value!r}: use INFO or DEBUG")
    return level


def reducer(level: str) -> Callable[[dict], dict] | None:
    """The function that trims a record for `level`, or None when records stay whole."""
    return info_record if parse_level(level) == "INFO" else None


def _without(d: dict, keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _http_summary(m: dict) -> dict:
    out = _without(m, _HTTP_DETAIL)
    more = out.get("more")
    if more:
        out["more"] = [_http_summary(x) for x in more]
    return out


def info_record(rec: dict) -> dict:
    """`rec` at INFO: a new dict (the original and its parts are left as they were)."""
    out = _without(rec, _INFO_DROP_TOP)
    for key, drop in _INFO_DROP_SUB.items():
        layer = out.get(key)
        if isinstance(layer, dict) and any(k in layer for k in drop):
            out[key] = _without(layer, drop)
    dns = out.get("dns")
    if isinstance(dns, dict) and isinstance(dns.get("edns"), dict) and "options" in dns["edns"]:
        out["dns"] = {**dns, "edns": _without(dns["edns"], ("options",))}
    http = out.get("http")
    if isinstance(http, dict):
        out["http"] = _http_summary(http)
    http2 = out.get("http2")
    if isinstance(http2, dict) and "frames" in http2:
        out["http2"] = _without(http2, ("frames",))
    return out


class Reduced:
    """A record writer whose records are trimmed first (the outermost writer, so --where
    and --fields see what is written, as with worker processes, which trim their own)."""

    def __init__(self, inner, reduce: Callable[[dict], dict]) -> None:
        self.inner = inner
        self.reduce = reduce

    def write(self, rec: dict) -> None:
        self.inner.write(self.reduce(rec))

    def __getattr__(self, name: str):  # out, flush, write_lines: the inner writer's
        return getattr(self.inner, name)
