"""How many bytes of finished parts may wait for upload: the spool limit.

On Cloud Run the parts directory is in memory (/tmp is a tmpfs charged to the
container), so parts that pile up while storage is down end as an out-of-memory kill
that loses everything. The uploader holds waiting parts under a byte limit and drops the
oldest beyond it (``pcaptool.storage.uploader``). The default is a quarter of the
container's memory limit, read from cgroup v2 (``memory.max``) or v1
(``memory.limit_in_bytes``), else of the machine's memory (/proc/meminfo);
``PCAP_SPOOL_BYTES`` / ``--spool-bytes`` sets it (``0``: no limit).
"""

from __future__ import annotations

import re
from pathlib import Path

from pcaptool.errors import UsageError

SPOOL_SHARE = 4  # the default limit is 1/SPOOL_SHARE of the memory limit
UNLIMITED_V1 = 1 << 60  # cgroup v1 reports "no limit" as a huge number (page-rounded)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str, what: str = "--spool-bytes") -> int:
    """``1048576``, ``64M``, ``1.5GiB`` -> bytes (binary units)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"{what} {text!r}: give a size in bytes, e.g. 268435456 or 256M")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value < UNLIMITED_V1 else None


def _own_cgroup_v2(root: Path, proc_cgroup: Path) -> Path | None:
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                return root / line[3:].lstrip("/")
    except OSError:
        pass
    return None


def cgroup_memory_limit(
    root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> int | None:
    """The memory limit of this process's cgroup in bytes, or None when there is none.

    cgroup v2: ``memory.max`` of the process's own cgroup and each parent up to ROOT (the
    tightest wins); cgroup v1: ``memory/memory.limit_in_bytes``.
    """
    limits = []
    own = _own_cgroup_v2(root, proc_cgroup)
    if own is not None:
        for directory in (own, *own.parents):
            limit = _read_int(directory / "memory.max")
            if limit is not None:
                limits.append(limit)
            if directory == root:
                break
    for v1 in (root / "memory" / "memory.limit_in_bytes", root / "memory.limit_in_bytes"):
        limit = _read_int(v1)
        if limit is not None:
            limits.append(limit)
    return min(limits) if limits else None


def machine_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def spool_bytes(setting: str | None) -> tuple[int, str]:
    """The limit and where it came from: the setting, or the memory limit it derives from."""
    if setting is not None and setting.strip() != "":
        return parse_size(setting), "setting"
    limit = cgroup_memory_limit()
    if limit is not None:
        return limit // SPOOL_SHARE, f"1/{SPOOL_SHARE} of the cgroup memory limit {limit}"
    machine = machine_memory()
    return (machine or 0) // SPOOL_SHARE, f"1/{SPOOL_SHARE} of the machine memory {machine}"


def count_lost(path: Path) -> tuple[int, str]:
    """What a part held, for the ERROR that says it was dropped: (count, "packets") for a
    capture (gzip or not, a cut-short one up to the cut), (count, "records") for NDJSON."""
    from pcaptool.capfile.reader import CaptureReader, open_input
    from pcaptool.errors import CaptureFormatError

    name = path.name.lower()
    try:
        stream = open_input(path)
    except (OSError, CaptureFormatError):
        return 0, "packets"
    with stream:
        if ".json" in name or ".ndjson" in name:
            count = 0
            try:
                while chunk := stream.read(1 << 20):
                    count += chunk.count(b"\n")
            except Exception:  # a cut-short or corrupt gzip: what was read counts
                pass
            return count, "records"
        reader = CaptureReader(stream, str(path))
        try:
            for _ in reader:
                pass
        except Exception:  # a cut-short or corrupt part: the packets before the cut count
            pass
        return reader.count, "packets"
