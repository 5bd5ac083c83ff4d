"""Merging capture or NDJSON parts into one stream (`pcaptool merge`).

parts.py finds the inputs, probe.py reads each one's header, sources.py frames an input
into keyed batches, captures.py merges them as mergecap does, ndjson.py merges records,
listing.py serves `--list`.
"""

from pcaptool.merge.captures import merge_captures
from pcaptool.merge.listing import PartSummary, format_ns, summarize
from pcaptool.merge.ndjson import merge_ndjson, rfc3339_ns
from pcaptool.merge.parts import MergeResult, Part, resolve_parts

__all__ = [
    "MergeResult",
    "Part",
    "PartSummary",
    "format_ns",
    "merge_captures",
    "merge_ndjson",
    "resolve_parts",
    "rfc3339_ns",
    "summarize",
]
