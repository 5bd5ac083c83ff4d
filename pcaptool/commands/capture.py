"""`pcaptool capture` (placeholder until its issue lands)."""

from pcaptool.errors import PcapToolError


def capture() -> None:
    """Not built yet."""
    raise PcapToolError("'capture' is not built yet")
