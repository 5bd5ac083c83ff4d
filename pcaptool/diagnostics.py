"""PCAP_DEBUG=true: every pcaptool process (each sidecar stage) runs as with `-v` (its
DEBUG lines, pcaptool/verbosity.py), and says when it starts, with what arguments, and when
it ends, with its CPU seconds and peak memory, as DEBUG lines."""

from __future__ import annotations

import atexit
import os
import resource
import sys
import time

from pcaptool.verbosity import debug_env as enabled


def install(argv: list[str] | None = None) -> None:
    """Log this process's start now and its end at exit, when PCAP_DEBUG is true."""
    if not enabled():
        return
    from pcaptool import __version__
    from pcaptool.log import log

    args = list(sys.argv[1:] if argv is None else argv)
    stage = next((a for a in args if not a.startswith("-")), "pcaptool")
    started = time.monotonic()
    log("DEBUG", f"{stage} starting", stage=stage, args=args, pid=os.getpid(), version=__version__)

    def ended() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        log(
            "DEBUG",
            f"{stage} ending",
            stage=stage,
            pid=os.getpid(),
            wall_seconds=round(time.monotonic() - started, 3),
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
            peak_rss_kib=peak_rss_kib(),
        )

    atexit.register(ended)


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB since it started its program.

    `VmHWM` of /proc/self/status: the high-water mark of this program's own memory map.
    Not `ru_maxrss`, which Linux carries across exec from the memory of the parent it
    was forked from (a child of a 350 MB test runner reports at least 350 MB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
