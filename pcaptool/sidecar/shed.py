"""A bounded backlog between a live capture stream and translate: JSON never costs pcap.

In the sidecar one capture feeds two branches through `tee`, which writes to both in
lockstep: a translate that falls behind would block tee, tee would block capture, and the
kernel would drop packets that the pcap parts should have kept. Here a thread reads the
stream as fast as it arrives (so the pipe never fills) into a backlog bounded in bytes;
translate takes packets from the backlog at its own pace. When the backlog is full the
packets are shed, never the stream: one `Shed` marker stands in their place and becomes a
WARNING record giving how many packets were skipped and the packet numbers they spanned.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator

from pcaptool.capfile.reader import CaptureReader, Packet
from pcaptool.errors import UsageError

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ names it; Linux only)
PIPE_SIZE = 1 << 20  # a larger pipe rides out the reader thread waiting for the GIL
BATCH = 256  # packets the consumer takes per lock
# What a held packet costs beside its bytes (the Packet tuple, its ints, the bytes
# object's header, the deque slot), so the bound is about memory, not payload alone.
PACKET_OVERHEAD = 224


class Shed:
    """Packets `first`..`last` (numbers in the input, 1-based) that were not translated."""

    __slots__ = ("first", "last", "count", "bytes", "ts_ns")

    def __init__(self, number: int, pkt: Packet) -> None:
        self.first = self.last = number
        self.count = 1
        self.bytes = len(pkt.data)
        self.ts_ns = pkt.ts_ns

    def add(self, number: int, pkt: Packet) -> None:
        self.last = number
        self.count += 1
        self.bytes += len(pkt.data)

    def record(self, translator) -> dict:
        """The WARNING record that takes the place of the shed packets."""
        from pcaptool.record.envelope import packet_record

        span = f"#{self.first}" if self.first == self.last else f"#{self.first}-#{self.last}"
        rec = packet_record(translator.clock, self.ts_ns, {})
        del rec["pcap"]  # no packet of its own: `shed` says which packets it stands for
        rec["severity"] = "WARNING"
        rec["message"] = (
            f"{span} {self.count} packet(s) not translated: translate fell behind the "
            "capture (the pcap parts keep them)"
        )
        rec["shed"] = {
            "packets": self.count,
            "first": self.first,
            "last": self.last,
            "bytes": self.bytes,
        }
        return rec


class Backlog:
    """Iterate the packets of `reader` through a backlog of at most `max_bytes`.

    Yields `Packet`s and, where packets were shed, one `Shed` each run of them. Once
    full it sheds until the backlog is down to half, so a translate that is slightly too
    slow sheds in runs, not every other packet. `on_idle` is called (in the consumer's
    thread) before waiting for packets: the place to flush output.
    """

    def __init__(
        self, reader: CaptureReader, max_bytes: int, on_idle: Callable[[], None] | None = None
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.reader = reader
        self.max_bytes = max_bytes
        self.on_idle = on_idle
        reader.before_read = None  # the reader runs in our thread: no output flush there
        self._items: deque = deque()
        self._held = 0
        self._shedding = False
        self._done = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self.shed_packets = 0

    @property
    def interfaces(self):
        return self.reader.interfaces

    @property
    def ended(self) -> bool:
        """The input has ended (what is left is the backlog)."""
        return self._done

    def _fill(self) -> None:
        cond, items = self._cond, self._items
        try:
            for number, pkt in enumerate(self.reader, 1):
                size = len(pkt.data) + PACKET_OVERHEAD
                with cond:
                    if self._shedding and self._held <= self.max_bytes // 2:
                        self._shedding = False
                    if self._shedding or (self._held + size > self.max_bytes and items):
                        self._shedding = True
                        self.shed_packets += 1
                        tail = items[-1] if items else None
                        if type(tail) is Shed:
                            tail.add(number, pkt)
                        else:
                            items.append(Shed(number, pkt))
                        continue
                    items.append(pkt)
                    self._held += size
                    if len(items) == 1:
                        cond.notify()
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = exc
        finally:
            with cond:
                self._done = True
                cond.notify()

    def __iter__(self) -> Iterator[Packet | Shed]:
        thread = threading.Thread(target=self._fill, name="pcaptool-backlog", daemon=True)
        thread.start()
        cond, items = self._cond, self._items
        while True:
            with cond:
                if not items and not self._done:
                    if self.on_idle is not None:
                        cond.release()
                        try:
                            self.on_idle()
                        finally:
                            cond.acquire()
                    while not items and not self._done:
                        cond.wait()
                if not items:
                    break
                # a few at a time, so what is held here counts against the bound too
                batch = [items.popleft() for _ in range(min(len(items), BATCH))]
                self._held -= sum(
                    len(i.data) + PACKET_OVERHEAD for i in batch if type(i) is not Shed
                )
            yield from batch
        thread.join()
        if self._error is not None:
            raise self._error


def enlarge_pipe(fd: int) -> None:
    """Best effort: a 1 MiB pipe buffer on a pipe we read (absorbs scheduling hiccups).

    Not a pipe, or the system's limit is lower: the default pipe will do."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def parse_size(text: str) -> int:
    """'64M', '512k', '1G' or a byte count; 0 means no backlog (translate blocks capture)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in units else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise UsageError(f"backlog size {text!r}: use a byte count or e.g. 64M, 512K")
    return int(number) * units[unit]


def quick_switching() -> None:
    """The reader thread must get the GIL soon after data arrives; 1 ms, not 5 ms."""
    sys.setswitchinterval(0.001)
