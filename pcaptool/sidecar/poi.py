"""PCAP-over-IP: the live capture as a pcap byte stream to a TCP receiver (`PCAP_POI_TARGET`).

A Cloud Run sidecar cannot accept connections, so it connects out to the receiver
(Arkime's PCAP-over-IP reader, `nc -l 57012 | wireshark -k -i -`) and reconnects with
backoff (1 s doubling to 30 s) whenever the connection fails or breaks.

The stream never slows capture: packets reach it through `shed.Backlog` (a thread reads the
input as fast as it comes, into a backlog bounded in bytes), and when the receiver is slow
or absent, whole packets are dropped, never part of one. Each connection starts with a pcap
global header followed by whole records; only a connection that breaks can end inside a
record, and the next one starts afresh with a header. Dropped packets are reported in
runs: one WARNING log line per run with how many, their bytes, the packet numbers they span
(1-based, in the input) and why (`behind`: the receiver reads slower than the capture;
`unconnected`: no receiver; `broken`: in flight when a connection broke; `linktype`:
another link type than the stream's; `stopping`: left when the input ended and DRAIN
seconds passed).

The connection leaves from `PCAP_SELF_PORTS` (sidecar/selfport.py), which the capture
filter excludes: the stream is never captured into itself.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable

from pcaptool.capfile.format import PCAP_HEADER, PCAP_MAGIC_US, Packet
from pcaptool.capfile.writer import pcap_record
from pcaptool.errors import UsageError
from pcaptool.sidecar import selfport
from pcaptool.sidecar.shed import Shed

ENV = "PCAP_POI_TARGET"
SNAPLEN = 262144
FLUSH_BYTES = 256 << 10  # records gathered before a send (and always when input pauses)
REPORT_EVERY = 10.0  # a long run of drops is reported at least this often (s)
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
DRAIN = 5.0  # after the end of input: seconds left to send the backlog
RECORD_HEAD = 16  # a pcap record's header

Target = tuple[str, int]


def parse_target(raw: str | None, setting: str = ENV) -> Target | None:
    """`host:port` or `[v6addr]:port` as (host, port); empty or DISABLED is None."""
    text = (raw or "").strip()
    if text.upper() in ("", "DISABLED"):
        return None
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or ":" in host and not text.startswith("[") or not port.isdigit():
        raise UsageError(f"{setting}: {text!r} is not HOST:PORT (e.g. arkime.internal:57012)")
    if not 1 <= int(port) <= 65535:
        raise UsageError(f"{setting}: {text!r}: the port must be 1-65535")
    return host, int(port)


class Drops:
    """One run of dropped packets for one reason, reported as one log line."""

    def __init__(self, reason: str, first: int, now: float) -> None:
        self.reason = reason
        self.first = self.last = first
        self.count = self.bytes = 0
        self.started = now

    def add(self, first: int, last: int, count: int, nbytes: int) -> None:
        self.last = last
        self.count += count
        self.bytes += nbytes


WHY = {
    "behind": "the receiver reads slower than the capture",
    "unconnected": "no receiver connected",
    "linktype": "link type differs from the stream's",
    "broken": "the connection broke before they were sent whole",
    "stopping": "the input ended and the receiver could not take them in time",
}


class Streamer:
    """Send packets to `target` as pcap; `run(items)` takes Packets and `Shed` markers.

    `block=True` (a file, no backlog): wait for a receiver instead of dropping, so every
    packet is sent (a packet in flight when a connection breaks is still lost).
    """

    def __init__(
        self,
        target: Target,
        log: Callable[..., None],
        ports: selfport.PortRange | None = None,
        block: bool = False,
        connect_timeout: float = 5.0,
        send_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target, self.log, self.ports, self.block = target, log, ports, block
        self.connect_timeout, self.send_timeout, self.clock = (
            connect_timeout,
            send_timeout,
            clock,
        )
        self.sock: socket.socket | None = None
        self.linktype: int | None = None
        self.next_try = 0.0
        self.backoff = BACKOFF_FIRST
        self.buf = bytearray()
        self.ends: list[tuple[int, int]] = []  # (end offset in buf, packet number)
        self.drops: Drops | None = None
        self.drain_until: float | None = None
        self.sent = self.dropped = self.connections = 0
        self.name = f"{target[0]}:{target[1]}"

    # ---------------------------------------------------------------- connection

    def _connect(self) -> bool:
        now = self.clock()
        if self.sock is not None:
            return True
        if now < self.next_try:
            return False
        try:
            sock = selfport.create_connection(self.target, self.connect_timeout, self.ports)
        except OSError as exc:
            self._fail(f"cannot connect to {self.name}: {exc}")
            return False
        sock.settimeout(self.send_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = PCAP_HEADER["<"].pack(PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, self.linktype or 1)
        try:
            sock.sendall(head)  # each connection: a global header, then whole records
        except OSError as exc:
            sock.close()
            self._fail(f"connection to {self.name} lost ({exc})")
            return False
        self.sock, self.backoff = sock, BACKOFF_FIRST
        self.connections += 1
        self.log(
            "INFO",
            f"PCAP-over-IP: streaming to {self.name}",
            poi={"target": self.name, "local_port": sock.getsockname()[1]},
        )
        return True

    def _fail(self, message: str) -> None:
        self.log("WARNING", f"PCAP-over-IP: {message}; retrying in {self.backoff:g} s")
        self.next_try = self.clock() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _send(self) -> None:
        """Send what is gathered; the packets not wholly sent are dropped: `broken` when the
        connection fails, `stopping` when the drain time after the end of input is over
        (the record in flight is finished first, so the stream still ends on a record)."""
        if not self.ends or self.sock is None:
            return
        view, done, limit = memoryview(self.buf), 0, len(self.buf)
        try:
            while done < limit:
                done, limit = self._send_some(view, done, limit)
        except OSError as exc:
            view.release()
            self._close()
            self._settle(done, "broken")
            self._fail(f"connection to {self.name} lost ({exc})")
            return
        view.release()
        self._settle(done, "stopping")
        self._report()

    def _send_some(self, view: memoryview, done: int, limit: int) -> tuple[int, int]:
        draining = self.drain_until is not None and limit == len(view)
        if draining:
            left = self.drain_until - self.clock()  # type: ignore[operator]
            if left <= 0:  # stop at the end of the record in flight
                limit = min(b for b in (0, *(end for end, _ in self.ends)) if b >= done)
                self.sock.settimeout(self.send_timeout)  # type: ignore[union-attr]
                return done, limit
            self.sock.settimeout(min(left, self.send_timeout))  # type: ignore[union-attr]
        try:
            return done + self.sock.send(view[done:limit]), limit  # type: ignore[union-attr]
        except TimeoutError:
            if draining and self.clock() >= self.drain_until:  # type: ignore[operator]
                return done, limit  # the drain time is over, not the receiver's patience
            raise

    def _settle(self, done: int, reason: str) -> None:
        """Count the packets sent whole (the first `done` bytes); drop the rest."""
        whole = sum(1 for end, _ in self.ends if end <= done)
        self.sent += whole
        rest = self.ends[whole:]
        if rest:
            start = self.ends[whole - 1][0] if whole else 0
            nbytes = len(self.buf) - start - RECORD_HEAD * len(rest)
            self._drop(reason, rest[0][1], rest[-1][1], len(rest), nbytes)
        self.buf.clear()
        self.ends.clear()

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # ---------------------------------------------------------------- drops

    def _drop(self, reason: str, first: int, last: int, count: int, nbytes: int) -> None:
        now = self.clock()
        run = self.drops
        # a run names exactly the packets it dropped: a gap (packets streamed in between)
        # or another reason starts a new one, as does a run older than REPORT_EVERY
        if run is not None and (
            run.reason != reason or first != run.last + 1 or now - run.started >= REPORT_EVERY
        ):
            self._report()
            run = None
        if run is None:
            run = self.drops = Drops(reason, first, now)
        run.add(first, last, count, nbytes)
        self.dropped += count

    def _report(self) -> None:
        run, self.drops = self.drops, None
        if run is None:
            return
        span = f"#{run.first}" if run.first == run.last else f"#{run.first}-#{run.last}"
        self.log(
            "WARNING",
            f"PCAP-over-IP: {span} {run.count} packet(s) not streamed to {self.name}: "
            f"{WHY[run.reason]} (the pcap parts keep them)",
            poi_dropped={
                "packets": run.count,
                "first": run.first,
                "last": run.last,
                "bytes": run.bytes,
                "reason": run.reason,
            },
        )

    # ---------------------------------------------------------------- the loop

    def add(self, number: int, pkt: Packet) -> None:
        """One packet: gathered for the next send, or dropped."""
        if self.linktype is None:
            self.linktype = pkt.linktype
        elif pkt.linktype != self.linktype:
            self._drop("linktype", number, number, 1, len(pkt.data))
            return
        while not self._connect():
            if not self.block:
                self._drop("unconnected", number, number, 1, len(pkt.data))
                return
            time.sleep(max(0.0, self.next_try - self.clock()))
        self.buf += pcap_record(pkt.ts_ns, pkt.data, pkt.wirelen, False)
        self.ends.append((len(self.buf), number))
        if len(self.buf) >= FLUSH_BYTES:
            self._send()

    def run(self, items: Iterable[Packet | Shed], ended: Callable[[], bool] | None = None) -> None:
        """Stream `items`; once `ended()` (the input is over, a backlog is left), what
        cannot be sent within DRAIN seconds is dropped (`stopping`): a slow receiver never
        holds up the sidecar's shutdown."""
        number = 0
        for item in items:
            if ended is not None and self.drain_until is None and ended():
                self.drain_until = self.clock() + DRAIN
            stopping = self.drain_until is not None and self.clock() > self.drain_until
            if type(item) is Shed:
                reason = "stopping" if stopping else "behind"
                self._drop(reason, item.first, item.last, item.count, item.bytes)
                number = item.last
                continue
            number += 1
            if stopping:
                self._drop("stopping", number, number, 1, len(item.data))  # type: ignore[union-attr]
                continue
            self.add(number, item)  # type: ignore[arg-type]
        self.flush()

    def flush(self) -> None:
        """Send what is gathered (the input paused or ended)."""
        self._send()
        if self.drops is not None and self.clock() - self.drops.started >= REPORT_EVERY:
            self._report()

    def close(self) -> None:
        if self.drain_until is None and not self.block:
            self.drain_until = self.clock() + DRAIN
        self._send()
        self._report()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            self._close()
        self.log(
            "INFO",
            f"PCAP-over-IP: {self.sent} packet(s) streamed to {self.name}, "
            f"{self.dropped} dropped, {self.connections} connection(s)",
            poi={
                "target": self.name,
                "streamed": self.sent,
                "dropped": self.dropped,
                "connections": self.connections,
            },
        )
