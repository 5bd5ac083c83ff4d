"""Input streams for captures: paths, stdin, pipes, gzip; one home for their errors.

`open_input()` sniffs gzip by its magic through `peek()` (never seeking) and decompresses
with ISA-L through `Gunzip`, which hands out every byte it could decompress before it
reports a stream cut short or corrupt: a `.pcap.gz` cut in the middle keeps each packet
before the cut, as `tshark -r` does. `read_chunk()` turns a decompression failure into the
one-line `CaptureFormatError` that every reader, merger and lister shows.
"""

from __future__ import annotations

import io
import os
import sys
import zlib
from typing import BinaryIO

from isal import isal_zlib

from pcaptool.capfile.format import GZIP_MAGIC
from pcaptool.errors import CaptureFormatError

CHUNK = 1 << 20
# Compressed bytes decompressed per step, and the most one step may expand to: a corrupt
# stream loses at most one step's output, and a deflate bomb never fills memory.
_GZ_IN = 64 << 10
_GZ_OUT = 1 << 20

# What reading a gzip stream can raise: cut short (EOFError), corrupt deflate data (zlib's
# and ISA-L's own error, which is no OSError), a bad header (OSError/ValueError).
DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    isal_zlib.error,
)


def open_input(source: str | os.PathLike | BinaryIO | None) -> BinaryIO:
    """Open a capture for reading: a path, `-`/None for stdin, or a binary stream.

    gzip is recognised by its magic bytes and decompressed on the fly; nothing seeks.
    """
    if source is None or source == "-":
        stream: BinaryIO = sys.stdin.buffer
    elif isinstance(source, (str, os.PathLike)):
        try:
            stream = open(source, "rb")  # noqa: SIM115 - the caller owns and closes it
        except OSError as exc:
            raise CaptureFormatError(f"cannot open {source}: {exc.strerror}") from None
    else:
        stream = source
    head = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
    if len(head) < 2:
        # peek() may give fewer bytes than asked on a pipe: read them, then put them back.
        head = _read_exactly(stream, 2)
        stream = Prefixed(head, stream)  # type: ignore[assignment]
    if head == GZIP_MAGIC:
        return io.BufferedReader(Gunzip(stream), CHUNK)  # type: ignore[return-value]
    return stream


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_chunk(read, size: int, name: str, count: int) -> bytes:
    """The next chunk of an input; broken compressed data is the input's CaptureFormatError."""
    try:
        return read(size)
    except DECOMPRESS_ERRORS as exc:
        raise CaptureFormatError(
            f"{name}: compressed data is corrupt or cut short ({exc}) after packet {count}"
        ) from None


class Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read: serves them, then the rest."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest
        self._read = getattr(rest, "read1", rest.read)

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        if self._prefix:
            if 0 <= n < len(self._prefix):
                out, self._prefix = self._prefix[:n], self._prefix[n:]
                return out
            out, self._prefix = self._prefix, b""
            return out
        return self._read(n if n is not None and n >= 0 else CHUNK)

    def readinto(self, b) -> int:
        data = self.read1(len(b))
        b[: len(data)] = data
        return len(data)

    def peek(self, n: int = 0) -> bytes:
        return self._prefix

    def close(self) -> None:
        self._rest.close()
        super().close()


class Gunzip(io.RawIOBase):
    """gzip members (one or more, zero padding between them) decompressed by ISA-L.

    Every byte decompressed is returned before an error is raised: a stream cut short
    raises EOFError only once everything before the cut was read.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._read = getattr(stream, "read1", stream.read)
        self._d = isal_zlib.decompressobj(31)
        self._in = b""  # compressed bytes not given to the decompressor yet
        self._out = b""
        self._off = 0  # bytes of _out already handed out
        self._started = False  # the current member has begun
        self._more = False  # the decompressor may hold output without more input
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._off >= len(self._out) and not self._done:
            self._out, self._off = b"", 0
            self._step()
        off = self._off
        n = min(len(b), len(self._out) - off)
        b[:n] = memoryview(self._out)[off : off + n]
        self._off = off + n
        return n

    def _step(self) -> None:
        d = self._d
        if self._more:  # the last call stopped at its output limit: more may be pending
            data = d.unconsumed_tail
        else:
            if not self._in:
                self._in = self._read(_GZ_IN)
            if not self._in:
                self._end_of_input()
                return
            if not self._started:
                self._in = self._in.lstrip(b"\0")  # padding between members
                if not self._in:
                    return
                self._started = True
            data, self._in = self._in, b""
        self._out = d.decompress(data, _GZ_OUT)
        self._more = len(self._out) == _GZ_OUT or bool(d.unconsumed_tail)
        if d.eof:  # a member ended: what follows is padding or another member
            self._in = d.unused_data
            self._d, self._started, self._more = isal_zlib.decompressobj(31), False, False

    def _end_of_input(self) -> None:
        self._done = True
        if self._started:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")

    def close(self) -> None:
        self._stream.close()
        super().close()
