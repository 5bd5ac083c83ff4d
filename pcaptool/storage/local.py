"""A directory destination: a plain directory or a GCS FUSE mount (``--dest DIR``).

Files land as ``DIR/PREFIX/<part>``: copied under a hidden temporary name, fsynced,
published without overwriting (``link()``, or check-then-``rename()`` where a FUSE mount
has no hard links), read back and compared. Copies are private (``pcaptool.fsmode``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path

from pcaptool import fsmode
from pcaptool.errors import PcapToolError
from pcaptool.storage.destination import (
    CHUNK,
    ChecksumMismatchError,
    FileDigest,
    ObjectExistsError,
    UploadError,
    UploadResult,
    file_digest,
)

_ERRNO_WORDS = {
    errno.ENOSPC: "destination is full",
    errno.EDQUOT: "destination quota exceeded",
    errno.EROFS: "destination is read-only",
    errno.EACCES: "permission denied on the destination",
    errno.EPERM: "operation not permitted on the destination",
    errno.ENOTDIR: "destination is not a directory",
}
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS)


def os_error(exc: OSError, where: Path) -> UploadError:
    words = _ERRNO_WORDS.get(exc.errno or 0, "cannot write to the destination")
    return UploadError(f"{words}: {where}: {exc.strerror or exc}")


class LocalDestination:
    def __init__(self, root: Path, prefix: str):
        self.root = Path(root)
        self.prefix = prefix.strip("/")
        self.directory = self.root / self.prefix
        self.location = os.fspath(self.directory)

    def name_of(self, path: Path) -> str:
        return os.fspath(self.directory / path.name)

    def check(self, probe: bool = False) -> None:
        """Make DIR/PREFIX; a read-only, full or unwritable destination fails here, once.

        ``probe`` writes, syncs and removes a hidden file: what a FUSE mount or a
        filesystem mounted read-only really allows, whatever its mode bits say.
        """
        try:
            fsmode.make_dirs(self.directory)
            if not os.access(self.directory, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            if probe:
                self._probe()
        except OSError as exc:
            raise PcapToolError(
                f"{os_error(exc, self.directory)} (local files are kept where they are)"
            ) from None

    def _probe(self) -> None:
        tmp = self.directory / f".pcaptool-check.{os.getpid()}.tmp"
        try:
            with fsmode.create(tmp) as f:
                f.write(b"pcaptool destination check\n")
                f.flush()
                os.fsync(f.fileno())
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def upload(self, path: Path) -> UploadResult:
        started = time.monotonic()
        final = self.directory / path.name
        digest = file_digest(path)
        try:
            fsmode.make_dirs(self.directory)
        except OSError as exc:
            raise os_error(exc, self.directory) from None
        if final.exists():
            return self._already_there(path, final, digest, started)
        tmp = self.directory / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            self._copy(path, tmp)
            published = self._publish(tmp, final)
        except OSError as exc:
            raise os_error(exc, final) from None
        finally:
            # On a read-only filesystem even unlinking a name that is not there fails.
            with contextlib.suppress(OSError):
                tmp.unlink()
        if not published:
            return self._already_there(path, final, digest, started)
        if file_digest(final) != digest:
            final.unlink(missing_ok=True)
            raise ChecksumMismatchError(f"{final}: copy differs from {path}")
        return UploadResult(
            source=os.fspath(path),
            url=os.fspath(final),
            bytes=digest.size,
            seconds=time.monotonic() - started,
            crc32c=digest.crc32c,
        )

    @staticmethod
    def _copy(src: Path, tmp: Path) -> None:
        with open(src, "rb") as fin, fsmode.create(tmp) as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())

    def _publish(self, tmp: Path, final: Path) -> bool:
        """Give TMP the name FINAL unless FINAL exists; False when it does."""
        try:
            os.link(tmp, final)  # atomic and refuses to replace
        except FileExistsError:
            return False
        except OSError as exc:
            # GCS FUSE and some other filesystems have no hard links: check, then rename.
            if exc.errno not in _NO_HARD_LINKS:
                raise
            if final.exists():
                return False
            os.rename(tmp, final)
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return True
        try:
            os.fsync(dir_fd)
        except OSError:
            pass  # some filesystems cannot fsync a directory; the file itself is synced
        finally:
            os.close(dir_fd)
        return True

    def _already_there(self, path: Path, final: Path, digest: FileDigest, started: float):
        there = file_digest(final)
        if there != digest:
            raise ObjectExistsError(
                f"{final} already exists with different content ({there.size} bytes); "
                "not overwritten"
            )
        return UploadResult(
            source=os.fspath(path),
            url=os.fspath(final),
            bytes=digest.size,
            seconds=time.monotonic() - started,
            crc32c=digest.crc32c,
            existed=True,
        )
