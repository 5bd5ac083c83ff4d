"""CPU of `pcaptool translate --pretty` in colour beside `pcaptool translate | jq -C .`.

Makes bench/gen_http.py's capture (default 200,000 packets) unless one is given, then
prints CPU seconds (user+sys of the children), alternating the two, and their ratio:

- formatting alone: pcaptool's colourised indentation of the records (record/pretty.py)
  against `jq -C .` on the same NDJSON;
- end to end: `translate --pretty` on a terminal (a pty; colour is on only there) against
  the pipeline `translate | jq -C .` (the CPU of both processes).

    python bench/pretty.py [--packets 200000] [--capture FILE] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import pty
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, ensure_capture  # noqa: E402

FORMAT = """
import sys, orjson
from pcaptool.record.pretty import PrettyWriter
out = PrettyWriter(open("/dev/null", "wb", buffering=1 << 20), colour=True)
for line in open(sys.argv[1], "rb"):
    out.write(orjson.loads(line))
out.flush()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, PCAP_RUN_ID="bench")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NO_COLOR", None)
    return env


def cpu(cmd: str, tty: bool = False) -> float:
    """User+sys CPU seconds of the shell command `cmd` and its children, output dropped
    (to a pty when `tty`, drained here)."""
    before = os.times()
    if tty:
        master, slave = pty.openpty()
        proc = subprocess.Popen(["sh", "-c", cmd], stdout=slave, env=_env())
        os.close(slave)
        while True:
            try:
                if not os.read(master, 1 << 16):
                    break
            except OSError:  # EIO: the child closed the terminal
                break
        os.close(master)
        rc = proc.wait()
    else:
        rc = subprocess.run(["sh", "-c", cmd + " >/dev/null"], env=_env()).returncode
    if rc != 0:
        sys.exit(f"failed ({rc}): {cmd}")
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--capture", type=Path)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("jq") is None:
        sys.exit("jq is the reference: install it")
    capture = ensure_capture(args.capture, args.packets)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        ndjson = Path(tmp) / "records.ndjson"
        translate = f"{py} -m pcaptool translate {capture}"
        subprocess.run(["sh", "-c", f"{translate} > {ndjson}"], env=_env(), check=True)
        cases = {
            "format: pcaptool": f"{py} -c '{FORMAT}' {ndjson}",
            "format: jq -C .": f"jq -C . < {ndjson}",
            "end to end: translate --pretty (pty)": f"{translate} --pretty",
            "end to end: translate | jq -C . (pty)": f"{translate} | jq -C .",
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, cmd in cases.items():  # alternating A/B, each pair in a row
                times[name].append(cpu(cmd, tty="pty" in name))
    best = {k: min(v) for k, v in times.items()}
    for name, secs in best.items():
        print(f"{name:40} {secs:8.2f} s CPU")
    print(
        f"ratio jq/pcaptool, formatting: {best['format: jq -C .'] / best['format: pcaptool']:.2f}x"
    )
    e2e = (
        best["end to end: translate | jq -C . (pty)"] / best["end to end: translate --pretty (pty)"]
    )
    print(f"ratio jq/pcaptool, end to end: {e2e:.2f}x")


if __name__ == "__main__":
    main()
