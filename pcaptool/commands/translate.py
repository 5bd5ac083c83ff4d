"""`pcaptool translate` (placeholder until its issue lands)."""

from pcaptool.errors import PcapToolError


def translate() -> None:
    """Not built yet."""
    raise PcapToolError("'translate' is not built yet")
