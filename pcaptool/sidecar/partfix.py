"""Rescue a part that rotate could not finish: a full disk, a kill mid-write.

A part is written as a hidden temporary file (`.part__IFACE__STAMP.EXT.tmp`) and renamed
into place when it is complete. When the disk fills (Cloud Run's /tmp is memory) or the
process dies, the temporary file ends with a record cut short. `repair()` truncates it to
its last whole record (pcap/pcapng by the rotate framer, NDJSON at the last newline), so
the rest is a valid, if truncated, capture; `recover_stranded()` does that for every such
file of a directory and renames it to its part name, which is what `upload --sweep` uploads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path

from pcaptool.errors import CaptureFormatError, PcapToolError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_TEMP_PART = re.compile(r"^\.(?P<name>part__.+?__\d{8}T\d{6}(?:_\d{4,})?\.\w+)\.tmp$")
CHUNK = 1 << 20


class PartsFull(PcapToolError):
    """The parts directory has no space (or quota) left for the open part."""


def whole_length(path: Path) -> tuple[int, int]:
    """(bytes, records) of the longest prefix of `path` made of whole records."""
    from pcaptool.sidecar.rotate import RECORD, CaptureFramer, NdjsonFramer

    ndjson = path.suffix == ".json" or path.name.endswith(".json.tmp")
    framer = NdjsonFramer(path.name) if ndjson else CaptureFramer(path.name)
    kept = records = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            try:
                for kind, data in framer.feed(chunk):
                    kept += len(data)
                    records += kind is RECORD
            except CaptureFormatError:
                break  # garbage after the cut: what came before it stands
    return kept, records


def repair(path: Path) -> int:
    """Truncate `path` to its whole records; the number of records kept."""
    kept, records = whole_length(path)
    with open(path, "r+b") as f:
        f.truncate(kept)
        f.flush()
        os.fsync(f.fileno())
    return records


def recover_stranded(directory: Path, log=None) -> list[Path]:
    """Every rotate temporary part in `directory` that no rotate holds (see `hold`),
    repaired and renamed to its part name (an empty one is removed)."""
    recovered = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    for tmp in entries:
        m = _TEMP_PART.match(tmp.name)
        target = directory / m["name"] if m else None
        if target is None or target.exists() or not tmp.is_file() or in_use(tmp):
            continue  # not rotate's, or still being written
        try:
            records = repair(tmp)
            if records == 0:
                tmp.unlink()
                continue
            os.rename(tmp, target)
        except OSError as exc:
            if log:
                log("ERROR", f"cannot recover {tmp}: {exc.strerror}", source=str(tmp))
            continue
        if log:
            log(
                "WARNING",
                f"recovered {records} record(s) of an unfinished part as {target.name}",
                source=str(tmp),
                part=str(target),
                records=records,
            )
        recovered.append(target)
    return recovered


def hold(f) -> None:
    """Mark an open temporary part as being written: an exclusive flock, released by the
    kernel however the writer ends (a SIGKILL too), so a sweep knows a stranded part."""
    with contextlib.suppress(OSError):
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def in_use(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def close_quietly(f) -> None:
    """Close a part file whose buffer cannot be flushed (no space): its fd is closed."""
    with contextlib.suppress(OSError, ValueError):
        f.close()
