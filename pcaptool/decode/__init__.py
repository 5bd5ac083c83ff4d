"""Packet decoders: one module per protocol, each adding its own key to a record.

Every decoder has the same shape: `decode(buf, off, end, rec)` reads the protocol at
`buf[off:end]`, stores a JSON-ready dict under its key in `rec`, and returns what the next
layer needs. A header cut short raises `Truncated`, which the translator turns into an
`error` object on the record; the stream goes on.
"""


class Truncated(Exception):
    """A header is shorter than its protocol needs."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(reason)
        self.layer = layer
        self.reason = reason


def need(layer: str, what: str, off: int, size: int, end: int) -> None:
    """Raise Truncated unless `size` bytes of `what` fit between `off` and `end`."""
    if off + size > end:
        raise Truncated(layer, f"{what} cut short: {max(end - off, 0)} of {size} bytes")
