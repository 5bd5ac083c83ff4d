"""`pcaptool compress` (placeholder until its issue lands)."""

from pcaptool.errors import PcapToolError


def compress() -> None:
    """Not built yet."""
    raise PcapToolError("'compress' is not built yet")
