"""`pcaptool rotate` (placeholder until its issue lands)."""

from pcaptool.errors import PcapToolError


def rotate() -> None:
    """Not built yet."""
    raise PcapToolError("'rotate' is not built yet")
