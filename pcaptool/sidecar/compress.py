"""gzip finished files safely and fast: write `.NAME.gz.*.tmp`, fsync, link, then unlink.

The deflate is Intel ISA-L's (`isal.isal_zlib`, a dependency already): at level 2 it runs
several times faster than `gzip -6` with output a few percent larger (bench/compress.py
prints both). The result is a plain RFC 1952 gzip member, so `gunzip`, `zcat` and
Wireshark/tshark read it. See docs/compress.md.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pcaptool import fsmode
from pcaptool.errors import PcapToolError
from pcaptool.log import log
from pcaptool.signals import StopSignals

DEFAULT_LEVEL = 2  # ISA-L levels are 0..3; see docs/compress.md for the measurement
CHUNK = 1 << 20
GZIP_WBITS = 16 + 15  # zlib convention: gzip header and trailer, 32 KiB window


def gz_path(path: Path) -> Path:
    return path.with_name(path.name + ".gz")


def compress_file(path: str | os.PathLike, level: int = DEFAULT_LEVEL) -> Path:
    """gzip `path` to `path.gz` and remove `path`; returns the new path.

    The `.gz` appears only complete (written under a temporary name, fsynced, renamed,
    directory fsynced); the source is removed only after that. On any failure the
    temporary file is removed, the source is left as it was, and PcapToolError says why.
    An existing `path.gz` is never overwritten.
    """
    from isal import isal_zlib

    src = Path(path)
    dst = gz_path(src)
    if dst.exists():
        raise PcapToolError(f"{dst} exists already; not overwriting it (and keeping {src})")
    tmp = None
    try:
        with open(src, "rb") as fin:
            # a name of its own (.NAME.gz.XXXXXXXX.tmp), so two compressors never share one
            fd, name = tempfile.mkstemp(prefix=f".{src.name}.gz.", suffix=".tmp", dir=src.parent)
            tmp = Path(name)
            fsmode.make_private(fd)
            with open(fd, "wb") as fout:
                comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, GZIP_WBITS)
                _deflate(fin, fout, comp)
                fout.flush()
                os.fsync(fout.fileno())
        _publish(tmp, dst)
        _fsync_dir(dst.parent)
    except FileExistsError:
        tmp.unlink()
        raise PcapToolError(
            f"{dst} appeared meanwhile; not overwriting it (and keeping {src})"
        ) from None
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise PcapToolError(
            f"cannot compress {src}: {exc.strerror or exc} (the file stays as it is)"
        ) from None
    try:
        src.unlink()
        _fsync_dir(src.parent)
    except FileNotFoundError:
        pass  # someone else removed it meanwhile; the .gz is complete
    except OSError as exc:
        # the .gz is complete and goes on; the leftover is reported, not shipped twice
        log("WARNING", f"compress: {dst} done but cannot remove {src}: {exc.strerror}")
    return dst


def _publish(tmp: Path, dst: Path) -> None:
    """Give the finished file its name, atomically and never over an existing one.

    link() fails with EEXIST where rename() would replace (two compressors racing on one
    file); where a filesystem has no hard links (some FUSE mounts), rename() it is.
    """
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise
    except OSError:
        os.rename(tmp, dst)
        return
    os.unlink(tmp)


def _deflate(fin: BinaryIO, fout: BinaryIO, comp) -> None:
    read, write, compress = fin.read, fout.write, comp.compress
    while chunk := read(CHUNK):
        write(compress(chunk))
    write(comp.flush())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Compressor:
    """Handle one path at a time; `emit(path)` gets what goes downstream.

    Disabled (`PCAP_COMPRESS=false`), every path passes through unchanged, so the pipeline
    keeps its shape. A path already ending in `.gz` passes through. A file that cannot be
    compressed is passed on as it is (better shipped uncompressed than not at all) and
    counted in `failures`; a path that does not exist is logged and dropped.
    """

    def __init__(self, emit: Callable[[str], None], enabled: bool = True, level: int = 2):
        self.emit = emit
        self.enabled = enabled
        self.level = level
        self.failures = 0
        self.done = 0

    def handle(self, path: str) -> None:
        if not path:
            return
        if not self.enabled or path.endswith(".gz"):
            self.emit(path)
            return
        if not os.path.isfile(path):
            self.failures += 1
            log("ERROR", f"compress: {path}: no such file", path=path)
            return
        try:
            out = compress_file(path, self.level)
        except PcapToolError as exc:
            self.failures += 1
            log("ERROR", f"compress: {exc}", path=path)
            if os.path.isfile(path):
                self.emit(path)  # shipped uncompressed rather than not at all
            return
        self.done += 1
        self.emit(str(out))


def lines_in_background(stream: BinaryIO) -> queue.Queue:
    """Read paths (one a line) on a daemon thread; None in the queue marks end of input.

    A thread, so the main loop can notice SIGTERM and a drain deadline while the read
    blocks. It reads the raw descriptor (os.read), not the buffered `sys.stdin.buffer`: a
    daemon thread blocked inside a buffered read holds its lock, and the interpreter
    aborts at exit ("could not acquire lock ... at interpreter shutdown").
    """
    q: queue.Queue = queue.Queue()
    fd = stream.fileno()

    def pump() -> None:
        rest = b""
        try:
            while chunk := os.read(fd, 65536):
                *lines, rest = (rest + chunk).split(b"\n")
                for raw in lines:
                    q.put(raw.decode("utf-8", "surrogateescape").rstrip("\r"))
            if rest:
                q.put(rest.decode("utf-8", "surrogateescape").rstrip("\r"))
        except OSError:
            pass  # stdin closed under us: end of input
        finally:
            q.put(None)

    threading.Thread(target=pump, name="compress-stdin", daemon=True).start()
    return q


def run_queue(
    q: queue.Queue, compressor: Compressor, stop: StopSignals, drain_timeout: float
) -> None:
    """Compress paths from `q` until end of input. After a stop signal, keep taking what
    arrives for `drain_timeout` seconds (the stage before is closing its last file); past
    that, paths still coming are passed on uncompressed until the input ends or a second
    `drain_timeout` elapses."""
    while True:
        if stop.stopping and time.monotonic() >= stop.at + 2 * drain_timeout:
            return
        try:
            path = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if path is None:
            return
        if stop.stopping and time.monotonic() >= stop.at + drain_timeout:
            compressor.emit(path)  # out of time: ship it as it is
            continue
        compressor.handle(path)


def watch_dir(
    directory: Path, compressor: Compressor, stop: StopSignals, interval: float = 0.5
) -> None:
    """Compress every finished file that appears in `directory` until a stop signal.

    Finished means visible: names starting with `.` (temporary files) and `.gz` files
    are skipped, so a writer must write under a dot-name and rename, as `rotate` does.
    """
    if not directory.is_dir():
        raise PcapToolError(f"--watch {directory}: not a directory")
    while not stop.stopping:
        for path in _finished_files(directory):
            if stop.stopping:
                return
            compressor.handle(str(path))
        stop.event.wait(interval)


def _finished_files(directory: Path) -> Iterator[Path]:
    names = sorted(
        e.name
        for e in os.scandir(directory)
        if not e.name.startswith(".") and not e.name.endswith(".gz") and e.is_file()
    )
    return (directory / name for name in names)


def run_paths(paths: Iterable[str], compressor: Compressor, stop: StopSignals) -> None:
    for path in paths:
        if stop.stopping:
            return  # the file in hand is finished; the rest stay as they are
        compressor.handle(path)
