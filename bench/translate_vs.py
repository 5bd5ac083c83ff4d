"""CPU of `pcaptool translate` in this checkout against an older revision, on the same
captures in the same run: the ratio issues 12 and 15 set their speed targets in.

Both trees run from source, their bytecode compiled first, one after the other in
alternating order (A B B A …) so that a drift of the machine's speed falls on both. For
each capture (bench/gen_http.py's JSON bodies and plain-text bodies) and mode (HTTP
analysis, `--no-http`) it prints the CPU seconds (user + sys) of every round and two
ratios, this tree over the revision: of the fastest runs (the least disturbed by other
work on the machine) and of the medians.

`--callgrind` counts instructions instead (valgrind, one run per tree): slow, but the
same from run to run, so it shows a change of a few per cent that CPU time hides. The
instructions of starting up (translate of a one-packet capture) are printed apart.

    python bench/translate_vs.py [--rev f576386] [--packets 100000] [--rounds 5] [--callgrind]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import run  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BASELINE = "f576386"  # main when issues 12 and 15 were filed

# Runs pcaptool from the source tree in PCT_ROOT, not from the installed (editable) one.
RUNNER = """\
import os, runpy, sys
root = os.environ["PCT_ROOT"]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__
                    and "editable" not in getattr(f, "__module__", "")]
sys.path.insert(0, root)
sys.argv = ["pcaptool", *sys.argv[1:]]
runpy.run_module("pcaptool", run_name="__main__")
"""


def tree(rev: str, into: Path) -> Path:
    """The source of `rev`, unpacked into `into`, its bytecode compiled."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "pcaptool"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    compileall.compile_dir(into / "pcaptool", quiet=1)
    return into


def command(root: Path, args: list[str]) -> list[str]:
    """`pcaptool translate ARGS` of the tree in `root`, run with `environment(root)`."""
    return [sys.executable, "-c", RUNNER, "translate", *args]


def environment(root: Path) -> dict[str, str]:
    return {"PCT_ROOT": str(root), "PCAP_RUN_ID": "bench"}


def cpu(root: Path, args: list[str]) -> float:
    return run(command(root, args), environment(root))[1]


def instructions(root: Path, args: list[str], work: Path) -> int:
    out = work / "callgrind.out"
    env = dict(os.environ, **environment(root))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command(root, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit("no instruction count in callgrind's output")


def captures(packets: int, work: Path) -> list[tuple[str, Path]]:
    out = []
    for body in ("json", "text"):
        path = work / f"http-{body}-{packets}.pcap"
        gen = [sys.executable, str(BENCH / "gen_http.py"), str(path), str(packets), "--body", body]
        subprocess.run(gen, check=True, stdout=subprocess.DEVNULL)
        out.append((f"{body} bodies", path))
    return out


def by_cpu(old: Path, new: Path, caps: list, rounds: int) -> None:
    for name, path in caps:
        for mode in ([], ["--no-http"]):
            times: dict[Path, list[float]] = {old: [], new: []}
            for r in range(rounds):
                for root in (old, new) if r % 2 == 0 else (new, old):
                    times[root].append(cpu(root, [*mode, str(path)]))
            o, n = times[old], times[new]
            label = f"{name}, {' '.join(mode) or 'HTTP analysis'}"
            print(f"{label:<28} old {' '.join(f'{t:5.2f}' for t in o)}")
            print(f"{'':<28} new {' '.join(f'{t:5.2f}' for t in n)}")
            fastest = min(n) / min(o)
            median = statistics.median(n) / statistics.median(o)
            print(f"{'':<28} new/old: fastest {fastest:.3f}, median {median:.3f}")


def by_instructions(old: Path, new: Path, caps: list, work: Path) -> None:
    one = work / "one.pcap"
    subprocess.run(
        [sys.executable, str(BENCH / "gen_http.py"), str(one), "1"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    start = {root: instructions(root, [str(one)], work) for root in (old, new)}
    print(f"start-up: old {start[old] / 1e9:.3f} G, new {start[new] / 1e9:.3f} G instructions")
    for name, path in caps:
        for mode in ([], ["--no-http"]):
            o, n = (instructions(root, [*mode, str(path)], work) for root in (old, new))
            per = (n - start[new]) / (o - start[old])
            label = f"{name}, {' '.join(mode) or 'HTTP analysis'}"
            print(
                f"{label:<28} old {o / 1e9:6.2f} G, new {n / 1e9:6.2f} G: "
                f"new/old {n / o:.3f} in all, {per:.3f} after start-up"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=BASELINE, help="the revision to compare with")
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    args = ap.parse_args()
    if args.callgrind and not shutil.which("valgrind"):
        sys.exit("--callgrind needs valgrind (apt install valgrind)")
    with tempfile.TemporaryDirectory(prefix="pcaptool-vs-") as tmp:
        work = Path(tmp)
        (work / "old").mkdir()
        old = tree(args.rev, work / "old")
        new = REPO
        compileall.compile_dir(new / "pcaptool", quiet=1)
        caps = captures(args.packets, work)
        print(f"{args.rev} (old) against this checkout (new), {args.packets} packets per capture")
        print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        if args.callgrind:
            by_instructions(old, new, caps, work)
        else:
            by_cpu(old, new, caps, args.rounds)


if __name__ == "__main__":
    main()
