"""A supervised consumer of a live capture stream: the sidecar's JSON branch survives a
translate that crashes or is OOM-killed.

`tee` feeds translate straight from capture; once translate dies nothing reads that pipe
again, and a translate started on the same pipe would begin in the middle of a packet
record. The relay sits between: it frames the stream (`capfile.framing.Framer`, the one
framer) so it always knows the file header in effect (a pcap header, or a pcapng section
header and its interface blocks) and where each packet starts. It runs the consumer as a
child, writes it whole units, and when the child dies it logs the gap as an ERROR, waits
(1, 2, 4 ... 30 s), starts a new one, gives it the header and goes on at the next packet.

Nothing is ever held up behind the consumer: a reader thread takes the input as it comes
into a queue bounded in bytes; beyond it (a consumer down or too slow) packets are not
handed over, and counted. The consumer's stdout is passed on in whole lines only, so a
child killed mid-write leaves no broken line. Each gap (packets handed to a child that
died before translating them, packets not handed over) becomes one record in the output,
in the shape of translate's `shed` record with `severity: ERROR`, so per-packet records
plus every record's `shed.packets` still equal the packets captured.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from pcaptool.capfile.framing import HEADER, INTERFACE, NONE, PACKET, Framer
from pcaptool.errors import CaptureFormatError

READ_SIZE = 1 << 20
FIRST_DELAY, MAX_DELAY = 1.0, 30.0
STEADY = 30.0  # a child that lived this long restarts the backoff from FIRST_DELAY
# The last packet a child accounted for: its latest record's pcap.num, or a shed's last.
_NUM = re.compile(rb'"pcap":\{"num":(\d+)|"shed":\{"packets":\d+,"first":\d+,"last":(\d+)')


class Blob:
    """Whole units of the stream: `packets` of them numbered from `first` (1-based)."""

    __slots__ = ("data", "first", "packets", "header", "starts_with_header")

    def __init__(self, data: bytes, first: int, packets: int, header: tuple, starts: bool):
        self.data, self.first, self.packets = data, first, packets
        self.header, self.starts_with_header = header, starts


class Skipped:
    """Packets `first`..`last` not handed over: the queue was full."""

    __slots__ = ("first", "last")

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last


class Relay:
    """Feed `argv`'s stdin from a capture stream, restarting it when it fails."""

    def __init__(
        self,
        argv: list[str],
        out_fd: int,
        log: Callable[..., None],
        max_bytes: int = 32 << 20,
        first_delay: float = FIRST_DELAY,
        name: str = "translate",
    ) -> None:
        self.argv, self.out_fd, self.log, self.name = argv, out_fd, log, name
        self.max_bytes, self.first_delay = max_bytes, first_delay
        self._queue: collections.deque[Blob | Skipped | None] = collections.deque()
        self._out_lock = threading.Lock()  # the child's lines and gap records, never mixed
        self._held = 0
        self._cond = threading.Condition()
        self._header: tuple[bytes, ...] = ()
        self.read = 0  # packets read from the input
        self.gaps = 0  # packets never translated, in all
        self.restarts = 0
        self._gone = False  # the current child's output ended
        self.error: str | None = None  # the input was not a capture stream

    # ------------------------------------------------------------------ input
    def read_input(self, in_fd: int) -> None:
        """The reader thread: frame the input into blobs until it ends."""
        framer = Framer("<stdin>", decode=NONE)
        try:
            while chunk := os.read(in_fd, READ_SIZE):
                self._frame(framer, chunk)
            framer.close()
        except CaptureFormatError as exc:
            self.error = str(exc)
        except OSError as exc:
            self.error = f"reading the capture stream: {exc.strerror}"
        finally:
            with self._cond:
                self._queue.append(None)
                self._cond.notify_all()

    def _frame(self, framer: Framer, chunk: bytes) -> None:
        start = end = None
        packets, starts, framing = 0, False, False
        header = self._header
        for kind, s, e, _info in framer.feed(chunk):
            if start is None:
                start, header, starts = s, self._header, kind == HEADER
            end = e
            if kind == PACKET:
                packets += 1
            elif kind == HEADER:
                self._header, framing = (bytes(framer.buf[s:e]),), True
            elif kind == INTERFACE:
                self._header, framing = (*self._header, bytes(framer.buf[s:e])), True
        if start is None:
            return
        blob = Blob(bytes(framer.buf[start:end]), self.read + 1, packets, header, starts)
        self.read += packets
        with self._cond:
            queue = self._queue
            # Headers and interface blocks are never skipped: the child needs them.
            full = self._held and self._held + len(blob.data) > self.max_bytes
            if full and packets and not framing:
                last = blob.first + packets - 1
                if queue and type(queue[-1]) is Skipped:
                    queue[-1].last = last
                else:
                    queue.append(Skipped(blob.first, last))
                return
            queue.append(blob)
            self._held += len(blob.data)
            self._cond.notify_all()

    def _take(self) -> Blob | Skipped | None | bool:
        """The next item, or False as soon as the child's output ended (it died, or is
        about to): a dead child is noticed even while no packets come."""
        with self._cond:
            while not self._queue and not self._gone:
                self._cond.wait()
            if self._gone:
                return False
            item = self._queue.popleft()
            if item is None:
                self._queue.appendleft(None)  # the end stays the end for every child
            elif type(item) is Blob:
                self._held -= len(item.data)
            return item

    # ------------------------------------------------------------------ the child
    def run(self, in_fd: int) -> int:
        """Relay until the input ends and a child has taken all of it: 0 when that child
        exited 0 (earlier failures were recovered from, each gap logged), else 1."""
        threading.Thread(target=self.read_input, args=(in_fd,), daemon=True).start()
        delay = self.first_delay
        while True:
            started = time.monotonic()
            status, handed, done, took_all = self._one_child()
            if took_all or self._ended():
                if status != 0:
                    self._gap(status, handed, done, None)  # nothing is left to give a new one
                return self._finish(0 if status == 0 else 1)
            if time.monotonic() - started >= STEADY:
                delay = self.first_delay
            self._gap(status, handed, done, delay)
            select.select([], [], [], delay)  # not time.sleep: see sidecar/health.py
            delay = min(delay * 2, MAX_DELAY)
            self.restarts += 1

    def _finish(self, status: int) -> int:
        if self.error:
            self.log("ERROR", f"relay: {self.error}")
            return 1
        return status

    def _ended(self) -> bool:
        """Only the end of input is left: nothing to give a new child."""
        with self._cond:
            return bool(self._queue) and self._queue[0] is None

    def _one_child(self) -> tuple[int, int, int, bool]:
        """One child from start to exit: (exit status, packets handed to it, packets it
        accounted for, whether it was given the whole rest of the input)."""
        child = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.base: int | None = None  # the capture's number of this child's packet 1
        accounted = [0]
        self._gone = False
        out = threading.Thread(target=self._forward, args=(child.stdout, accounted), daemon=True)
        out.start()
        handed, took_all, first = 0, False, True
        try:
            while (blob := self._take()) is not None:
                if blob is False:
                    break  # its output ended: it is gone
                if type(blob) is Skipped:
                    self._emit_gap(blob.first, blob.last, f"{self.name} fell behind")
                    continue
                if first and not blob.starts_with_header:
                    child.stdin.write(b"".join(blob.header))
                first = False
                if self.base is None:
                    self.base = blob.first
                handed += blob.packets
                child.stdin.write(blob.data)
                child.stdin.flush()
            else:
                child.stdin.close()
                took_all = True
        except (BrokenPipeError, OSError, ValueError):  # it died: the supervisor decides
            pass
        with contextlib.suppress(OSError):
            child.stdin.close()
        status = child.wait()
        out.join()
        return status, handed, min(accounted[0], handed), took_all

    def _forward(self, stream, accounted: list[int]) -> None:
        """The child's stdout to ours, whole lines only; note the last packet accounted."""
        rest = b""
        fd = stream.fileno()
        while chunk := os.read(fd, READ_SIZE):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if not cut:
                rest = data
                continue
            whole, rest = data[:cut], data[cut:]
            for m in _NUM.finditer(whole, max(0, len(whole) - 65536)):
                accounted[0] = max(accounted[0], int(m.group(1) or m.group(2)))
            self._write(whole)
        stream.close()
        with self._cond:
            self._gone = True
            self._cond.notify_all()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        with self._out_lock:
            while view:
                try:
                    n = os.write(self.out_fd, view)
                except BrokenPipeError:
                    return  # the reader left: keep the child fed, output nowhere
                view = view[n:]

    # ------------------------------------------------------------------ gaps
    def _gap(self, status: int, handed: int, done: int, delay: float | None) -> None:
        if status < 0:
            why = f"{self.name} was killed by {signal.Signals(-status).name}"
        else:
            why = f"{self.name} exited with status {status}"
        if handed > done and self.base is not None:
            self._emit_gap(self.base + done, self.base + handed - 1, why)
        if delay is not None:
            self.log(
                "ERROR",
                f"{why}: restarting it in {delay:g} s; it gets the stream's header and "
                f"goes on at the next packet ({handed - done} packet(s) not translated)",
                stage=self.name,
                exit_status=status,
                lost=handed - done,
            )

    def _emit_gap(self, first: int, last: int, why: str) -> None:
        count = last - first + 1
        self.gaps += count
        span = f"#{first}" if first == last else f"#{first}-#{last}"
        message = f"{span} {count} packet(s) not translated: {why} (the pcap parts keep them)"
        now = time.time_ns()
        record = {
            "timestamp": {"seconds": now // 1_000_000_000, "nanos": now % 1_000_000_000},
            "severity": "ERROR",
            "message": message,
            "shed": {"packets": count, "first": first, "last": last, "bytes": 0},
        }
        self._write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self.log("ERROR", message, stage=self.name, lost=count, first=first, last=last)
