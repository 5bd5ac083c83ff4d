"""The parts a merge reads: local files, stdin, directories, globs and gs:// listings.

`resolve_parts()` turns the command line's specs into `Part`s in order; the capture merge
lives in `captures.py`, the NDJSON merge in `ndjson.py`, `--list` in `listing.py`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pcaptool.errors import PcapToolError, UsageError

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")
NDJSON_SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz", ".jsonl.gz")
GLOB_CHARS = frozenset("*?[")


@dataclass
class Part:
    """One input as the user named it (a path, `-`, or gs://bucket/object) and where it is."""

    name: str
    path: str | None  # local path or "-"; None until a Cloud Storage object is downloaded
    size: int | None = None
    updated: datetime | None = None
    gcs: object = None  # pcaptool.storage.fetch.GcsObject for gs:// parts
    listed: bool = False  # found in a directory or under a gs:// prefix, not named


@dataclass
class MergeResult:
    packets: int = 0
    inputs: int = 0
    format: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)


def expand_local(spec: str, suffixes: tuple[str, ...]) -> list[Part]:
    """A file, `-`, a directory (every part in it, recursively, in name order) or a glob."""
    if spec == "-":
        return [Part("<stdin>", "-")]
    path = Path(spec)
    if path.is_dir():
        found = sorted((p for p in path.rglob("*") if _is_part(p, suffixes)), key=lambda p: str(p))
        if not found:
            raise PcapToolError(f"{spec}: no parts ({', '.join(suffixes)}) in this directory")
        return [_local_part(p, listed=True) for p in found]
    if not path.exists() and GLOB_CHARS & set(spec):
        found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not found:
            raise PcapToolError(f"{spec}: no file matches")
        return [_local_part(Path(p), listed=True) for p in found]
    if not path.exists():
        raise PcapToolError(f"{spec}: no such file or directory")
    return [_local_part(path)]


def resolve_parts(
    specs: list[str],
    fmt: str | None,
    output: str | None,
    list_gcs: Callable[[str, tuple[str, ...]], list[Part]],
) -> tuple[list[Part], bool]:
    """The parts SPECS name, in order, and whether they are NDJSON.

    Directories and gs:// prefixes are listed for both kinds of part; the kind is NDJSON
    when FMT says so or when every part found is NDJSON by name. A folder holding both
    merges its captures. The OUTPUT file is left out of listings (see exclude_output).
    """
    wanted = {
        "ndjson": NDJSON_SUFFIXES,
        "pcap": CAPTURE_SUFFIXES,
        "pcapng": CAPTURE_SUFFIXES,
    }.get(fmt or "", CAPTURE_SUFFIXES + NDJSON_SUFFIXES)
    parts: list[Part] = []
    for spec in specs:
        parts.extend(
            list_gcs(spec, wanted) if spec.startswith("gs://") else expand_local(spec, wanted)
        )
    ndjson = fmt == "ndjson" or (
        fmt is None and all(p.name.endswith(NDJSON_SUFFIXES) for p in parts)
    )
    if fmt is None and not ndjson:
        parts = [p for p in parts if not p.listed or p.name.endswith(CAPTURE_SUFFIXES)]
    return exclude_output(parts, output, set(specs)), ndjson


def _is_part(path: Path, suffixes: tuple[str, ...]) -> bool:
    # Hidden names are temporaries (a part being written or downloaded), never a part.
    name = path.name
    return not name.startswith(".") and name.endswith(suffixes) and path.is_file()


def _local_part(path: Path, listed: bool = False) -> Part:
    st = path.stat()
    mtime = datetime.fromtimestamp(st.st_mtime, UTC)
    return Part(str(path), str(path), st.st_size, mtime, listed=listed)


def exclude_output(parts: list[Part], output: str | None, explicit: set[str]) -> list[Part]:
    """Drop the output file from expanded inputs; refuse it when it was named as an input."""
    if not output or output == "-" or not os.path.exists(output):
        return parts
    kept = []
    for part in parts:
        if part.path not in (None, "-") and os.path.samefile(part.path, output):
            if part.name in explicit:
                raise UsageError(f"{output} is both an input and the output")
            continue
        kept.append(part)
    return kept
