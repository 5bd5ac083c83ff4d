"""One memory budget for the HTTP analysis of a translation.

Every byte HTTP analysis keeps between packets is charged here, across all connections:
HTTP/1 header sections still arriving and requests waiting for their responses, HTTP/2
frame and header-block buffers, open streams' headers and HPACK tables. Past the limit a
connection's new state is refused and reported (`headers_too_large`, `memory_cap`), so
what the analysis holds is bounded by this, not by the number of connections.
"""

from __future__ import annotations

HTTP_MEMORY = 64 << 20


class Budget:
    __slots__ = ("held", "limit")

    def __init__(self, limit: int = HTTP_MEMORY) -> None:
        self.held = 0
        self.limit = limit

    def over(self, more: int = 0) -> bool:
        return self.held + more > self.limit
