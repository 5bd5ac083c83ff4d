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
            peak_rss_kib=usage.ru_maxrss,
        )

    atexit.register(ended)
