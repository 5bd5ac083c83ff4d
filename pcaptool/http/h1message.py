"""One HTTP/1.x request or response, as `pcaptool.http.http1.Http1Parser` builds it, and
the `http` object of the record that completes it."""

from __future__ import annotations


class Message:
    """One HTTP/1.x request or response."""

    __slots__ = (
        "is_request",
        "method",
        "target",
        "version",
        "status",
        "reason",
        "headers",
        "header_size",
        "body_size",
        "sample",
        "chunked",
        "errors",
        "first_ts",
        "end_ts",
        "end_offset",
        "request",
        "trace",
        "gap",
        "first_num",
        "cost",
    )

    def __init__(self, is_request: bool, ts: int) -> None:
        self.is_request = is_request
        self.method = self.target = self.version = self.reason = None
        self.status = None
        self.headers: dict[str, str] = {}
        self.header_size = 0
        self.body_size = 0
        self.sample = b""
        self.chunked = False
        self.errors: list = []
        self.first_ts = ts
        self.end_ts = ts
        self.end_offset = 0
        self.request: Message | None = None
        self.trace = None
        self.gap = 0
        self.first_num = 0
        self.cost = 0  # what keeping this message costs, as charged to the budget

    @property
    def host(self) -> str | None:
        return self.headers.get("host")

    def as_dict(self) -> dict:
        """The `http` object of the record that completes this message."""
        h = self.headers
        if self.is_request:
            d = {
                "type": "request",
                "method": self.method,
                "target": self.target,
                "host": h.get("host"),
                "version": self.version,
                "headers": h,
                "header_size": self.header_size,
                "body_size": self.body_size,
            }
        else:
            d = {
                "type": "response",
                "version": self.version,
                "status": self.status,
                "reason": self.reason,
                "headers": h,
                "header_size": self.header_size,
                "body_size": self.body_size,
            }
        if self.chunked:
            d["chunked"] = True
        if self.sample:
            d["body_sample"] = self.sample.decode("utf-8", "replace")
        if self.gap:
            d["gap"] = self.gap
        if self.errors:
            d["error"] = {"code": self.errors[0][0], "detail": self.errors[0][1]}
            d["errors"] = [{"code": c, "detail": t} for c, t in self.errors]
        req = self.request
        if req is not None:
            r = {"method": req.method, "target": req.target, "host": req.headers.get("host")}
            if req.first_num:
                r["num"] = req.first_num
            d["request"] = r
            d["latency"] = self.end_ts - req.first_ts
        return d
