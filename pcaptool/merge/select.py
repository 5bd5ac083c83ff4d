"""`merge` with tcpdump's habits: a read filter and -c on packets, --where/--fields on records.

The merge itself is untouched: capture merges are written to a temporary file, then read
back through the read filter (as `mergecap -w - … | tcpdump -r - -w OUT EXPR` would), so
the packet order and every merge rule stay mergecap's. NDJSON merges are filtered line by
line on their way out.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

import orjson

from pcaptool.translate.select import get_path, project


class RecordFilterOutput:
    """A binary stream that keeps the NDJSON lines `where` accepts, projected to `fields`."""

    def __init__(self, out: BinaryIO, where=None, fields=None, count: int = 0) -> None:
        self.out = out
        self.where = where
        self.fields = fields
        self.count = count
        self.kept = 0
        self._rest = b""

    def write(self, data: bytes) -> int:
        lines = (self._rest + bytes(data)).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self._line(line)
        return len(data)

    def _line(self, line: bytes) -> None:
        if not line.strip() or (self.count and self.kept >= self.count):
            return
        rec = orjson.loads(line)
        if self.where is not None and not self.where(rec):
            return
        self.kept += 1
        if self.fields:
            line = orjson.dumps(project(rec, self.fields))
        self.out.write(line + b"\n")

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        if self._rest:
            self._line(self._rest)
            self._rest = b""
        self.out.close()


def refilter_capture(
    path: str, open_output: Callable[[], BinaryIO], expression: str | None, count: int
) -> int:
    """Copy the merged capture at `path` to the real output, keeping what the filter keeps."""
    from pcaptool.capfile.reader import CaptureReader, PcapngWriter, PcapWriter
    from pcaptool.capfile.readfilter import FilteredReader

    with open(path, "rb") as stream:
        head = stream.read(4)
        stream.seek(0)
        reader = FilteredReader(CaptureReader(stream, os.path.basename(path)), expression, count)
        out = open_output()
        pcapng = head == b"\x0a\x0d\x0d\x0a"
        writer = PcapngWriter(out) if pcapng else None
        ids: dict[int, int] = {}
        for pkt in reader:
            if writer is None:
                iface = reader.interfaces[0]
                writer = PcapWriter(out, iface.linktype, snaplen=iface.snaplen)
            if isinstance(writer, PcapngWriter):
                if pkt.iface not in ids:
                    iface = reader.interfaces[pkt.iface]
                    ids[pkt.iface] = writer.add_interface(iface.linktype, iface.snaplen, iface.name)
                writer.write(ids[pkt.iface], pkt.ts_ns, pkt.data, pkt.wirelen)
            else:
                writer.write(pkt.ts_ns, pkt.data, pkt.wirelen)
        if writer is None and reader.interfaces:  # nothing kept: still a valid, empty capture
            iface = reader.interfaces[0]
            PcapWriter(out, iface.linktype, snaplen=iface.snaplen)
        out.flush()
        return reader.kept


def temporary_capture() -> tuple[str, Callable[[], BinaryIO]]:
    """A temporary file the merge writes to; removed by the caller."""
    fd, path = tempfile.mkstemp(prefix=".pcaptool-merge-", suffix=".tmp")
    os.close(fd)
    return path, lambda: open(path, "wb")  # noqa: SIM115 - closed by the merge


__all__ = ["RecordFilterOutput", "get_path", "refilter_capture", "temporary_capture"]
