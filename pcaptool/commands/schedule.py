"""`pcaptool schedule` (placeholder until its issue lands)."""

from pcaptool.errors import PcapToolError


def schedule() -> None:
    """Not built yet."""
    raise PcapToolError("'schedule' is not built yet")
