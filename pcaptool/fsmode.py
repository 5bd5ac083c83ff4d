"""Captures hold secrets: every file a command creates is private (0600, directories 0700).

A group that must read them (a log shipper, an analyst's account) gets read access with
``PCAP_GROUP_READABLE=true`` (or ``pcaptool --group-readable ...``): files 0640,
directories 0750. The modes are set explicitly, so they do not depend on the umask.
Only what pcaptool creates gets these modes; an existing output file keeps its own.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

GROUP_ENV = "PCAP_GROUP_READABLE"
_TRUE = ("1", "true", "yes", "on")


def group_readable() -> bool:
    return os.environ.get(GROUP_ENV, "").strip().lower() in _TRUE


def file_mode() -> int:
    return 0o640 if group_readable() else 0o600


def dir_mode() -> int:
    return 0o750 if group_readable() else 0o700


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p`` where each directory created gets ``dir_mode()`` (existing ones are kept)."""
    path = Path(path)
    missing = []
    for p in (path, *path.parents):
        if os.path.lexists(p):  # a directory, or a file that mkdir below will report
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            p.mkdir(mode=dir_mode())
        except FileExistsError:
            if not p.is_dir():
                raise
            continue
        with contextlib.suppress(OSError):
            os.chmod(p, dir_mode())  # mkdir's mode is filtered by the umask
    return path


def make_private(fd: int) -> None:
    """Give a file we just created (``mkstemp``, ``os.open``) the private mode."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.fchmod(fd, file_mode())


def create(path: str | os.PathLike, exclusive: bool = True, buffering: int = -1) -> BinaryIO:
    """Open PATH for writing as a new private file.

    ``exclusive``: fail with FileExistsError when it exists (``open(path, "xb")``).
    Otherwise an existing file is truncated and keeps its mode (like ``open(path, "wb")``);
    devices and FIFOs (``/dev/null``, a named pipe) are opened as they are.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, file_mode())
    except FileExistsError:
        if exclusive:
            raise
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0))
    else:
        try:
            make_private(fd)
        except OSError:
            os.close(fd)
            raise
    return open(fd, "wb", buffering=buffering)  # noqa: SIM115 - the caller closes it
