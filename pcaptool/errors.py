"""The project's exceptions and exit codes (documented in the README)."""

EXIT_OK = 0
EXIT_RUNTIME = 1  # a runtime failure, or input cut short / corrupt (what came before is written)
EXIT_USAGE = 2  # bad flag, bad value, bad filter expression


class PcapToolError(Exception):
    """An error the user should see as one line, with an exit code."""

    exit_code = EXIT_RUNTIME


class UsageError(PcapToolError):
    exit_code = EXIT_USAGE


class CaptureFormatError(PcapToolError):
    """A capture file that is not a capture, is cut short, or has a corrupt record/block."""

    exit_code = EXIT_RUNTIME
