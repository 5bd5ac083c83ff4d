"""Where parallel translate's worker results go (pcaptool/translate/parallel.py): written
by the threads that receive them, under one lock, either as they come or in capture
order, merging the records of their own that several workers make at one packet."""

from __future__ import annotations

import threading
from collections import deque
from operator import itemgetter

PACKET = (0, 0)  # the sort key of a packet's own record among records of their own
_first = itemgetter(0)


class Output:
    """Where worker results go: written by the threads that receive them, under one lock,
    so a live capture's records appear without waiting for the next packet."""

    def __init__(self, write, flush, workers: int, ordered: bool) -> None:
        self.write = write
        self.flush = flush
        self.ordered = ordered
        self.cond = threading.Condition()
        self.outstanding = [0] * workers
        self.ready: list[deque] = [deque() for _ in range(workers)]
        self.log: deque = deque()  # ordered: which workers hold each next message's lines
        self.error: BaseException | None = None

    def result(self, w: int, got) -> None:
        with self.cond:
            self.outstanding[w] -= 1
            try:
                if self.error is None:
                    if self.ordered:
                        self._ready(w, got)
                        self._emit()
                    else:
                        self.write(got[0])
                    self.flush()
            except BaseException as exc:  # a closed stdout (`| head`): the main thread ends
                self.error = exc
            self.cond.notify_all()

    def failed(self, exc: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = exc
            self.cond.notify_all()

    def wait(self, w: int | None, most: int) -> None:
        """Wait until worker w (every worker if None) has at most `most` batches in flight."""
        with self.cond:
            while True:
                if self.error is not None:
                    raise self.error
                pending = self.outstanding if w is None else [self.outstanding[w]]
                if max(pending) <= most:
                    return
                self.cond.wait()

    def _ready(self, w: int, got) -> None:
        blob, ends, keyed = got
        view = memoryview(blob)
        r = self.ready[w]
        start = 0
        for idx, end in enumerate(ends):
            ks = keyed.get(idx)
            if ks is None:
                r.append(view[start:end])
            else:
                items = []
                p = start
                for key, n in ks:
                    items.append((key, view[p : p + n]))
                    p += n
                r.append(items)
            start = end

    def _emit(self) -> None:
        log, ready, write = self.log, self.ready, self.write
        while log:
            e = log[0]
            if e.__class__ is int:
                r = ready[e]
                if not r:
                    return
                res = r.popleft()
                log.popleft()
                if res.__class__ is list:
                    for _, line in res:
                        write(line)
                else:
                    write(res)
            else:
                for w in e:
                    if not ready[w]:
                        return
                log.popleft()
                items = []
                for w in e:
                    res = ready[w].popleft()
                    if res.__class__ is list:
                        items += res
                    elif len(res):
                        items.append((PACKET, res))
                items.sort(key=_first)
                for _, line in items:
                    write(line)
