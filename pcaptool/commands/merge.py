"""`pcaptool merge` (placeholder until its issue lands)."""

from pcaptool.errors import PcapToolError


def merge() -> None:
    """Not built yet."""
    raise PcapToolError("'merge' is not built yet")
