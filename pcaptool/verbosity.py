"""How much a command says on stderr: `-q` (warnings and errors only), default, `-v` (debug).

Set once per process from the command's `-q`/`-v` flags; every logger asks `should_log`.
Errors that end a command are always printed.
"""

from __future__ import annotations

_RANK = {
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}
QUIET, NORMAL, VERBOSE = "WARNING", "INFO", "DEBUG"


def debug_env() -> bool:
    """PCAP_DEBUG=true (the sidecar's setting; Go's ParseBool words): `-v` for every stage."""
    import os

    return os.environ.get("PCAP_DEBUG", "") in {"1", "t", "T", "TRUE", "true", "True"}


_threshold = _RANK[VERBOSE if debug_env() else NORMAL]


def set_level(quiet: bool = False, verbose: bool = False) -> None:
    """`-q` wins over `-v` when both are given (as in rsync: say less is the safe reading).
    PCAP_DEBUG=true counts as `-v`."""
    global _threshold
    verbose = verbose or debug_env()
    _threshold = _RANK[QUIET if quiet else VERBOSE if verbose else NORMAL]


def should_log(severity: str) -> bool:
    return _RANK.get(str(severity).upper(), _RANK["INFO"]) >= _threshold


def verbose() -> bool:
    return _threshold <= _RANK[VERBOSE]


def quiet() -> bool:
    return _threshold >= _RANK[QUIET]
