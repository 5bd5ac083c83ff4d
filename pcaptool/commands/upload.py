"""`pcaptool upload` (placeholder until its issue lands)."""

from pcaptool.errors import PcapToolError


def upload() -> None:
    """Not built yet."""
    raise PcapToolError("'upload' is not built yet")
