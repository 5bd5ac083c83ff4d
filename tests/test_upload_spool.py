"""`pcaptool upload` under storage faults: the memory-bounded spool, `--check`, bucket names.

Real parts (pcaps built here), the real fake-gcs-server, tmpfs mounts as root.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_rotate import packets_of, pcap_bytes
from test_upload import PREFIX, Running, env_for, json_lines

from conftest import needs_root, run_pcaptool
from pcaptool.errors import UsageError
from pcaptool.storage import spool


def write_parts(directory: Path, count: int, packets: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(count):
        p = directory / f"part__eth0__20260102T0300{i:02d}.pcap"
        p.write_bytes(pcap_bytes(packets, start=i * packets))
        parts.append(p)
    return parts


# ------------------------------------------------------------------ the limit


def test_cgroup_v2_limit_is_the_tightest_of_the_process_cgroup_and_its_parents(tmp_path):
    root = tmp_path / "cgroup"
    own = root / "system.slice" / "run.scope"
    own.mkdir(parents=True)
    (root / "system.slice" / "memory.max").write_text("536870912\n")
    (own / "memory.max").write_text("max\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/system.slice/run.scope\n")
    assert spool.cgroup_memory_limit(root, proc) == 536870912
    (own / "memory.max").write_text("268435456\n")
    assert spool.cgroup_memory_limit(root, proc) == 268435456


def test_cgroup_v1_limit_and_no_limit(tmp_path):
    root = tmp_path / "cgroup"
    (root / "memory").mkdir(parents=True)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("12:memory:/docker/abc\n")
    v1 = root / "memory" / "memory.limit_in_bytes"
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert spool.cgroup_memory_limit(root, proc) is None
    v1.write_text("1073741824\n")
    assert spool.cgroup_memory_limit(root, proc) == 1 << 30
    assert spool.cgroup_memory_limit(tmp_path / "none", tmp_path / "none") is None


def test_spool_setting_sizes():
    assert spool.parse_size("268435456") == 256 << 20
    assert spool.parse_size("256M") == spool.parse_size("256MiB") == 256 << 20
    assert spool.parse_size("1.5G") == 3 << 29
    assert spool.spool_bytes("0") == (0, "setting")
    with pytest.raises(UsageError, match="--spool-bytes"):
        spool.parse_size("lots")
    limit, source = spool.spool_bytes(None)
    assert limit > 0 and "memory" in source


def test_count_lost_reads_what_a_part_held(tmp_path):
    import gzip

    p = tmp_path / "p.pcap.gz"
    p.write_bytes(gzip.compress(pcap_bytes(9)))
    assert spool.count_lost(p) == (9, "packets")
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(pcap_bytes(9)[:-50])  # cut inside the last record
    assert spool.count_lost(cut) == (8, "packets")
    j = tmp_path / "r.json.gz"
    j.write_bytes(gzip.compress(b'{"a":1}\n{"a":2}\n'))
    assert spool.count_lost(j) == (2, "records")


def test_storage_down_longer_than_the_spool_drops_the_oldest_and_counts_the_loss(
    gcs_server, tmp_path
):
    gcs_server.make_bucket("ptspool")
    parts = write_parts(tmp_path / "parts", 10, packets=40)  # ~10 KB each
    size = parts[0].stat().st_size
    sent = sum(len(packets_of(p)) for p in parts)
    gcs_server.stop()
    run = Running(
        "-b", "ptspool", "--prefix", PREFIX, "--jobs", "1", "--spool-bytes", str(3 * size),
        "--retry-timeout", "1", "--retry-later", "1", env=env_for(gcs_server),
    )  # fmt: skip
    run.wait_started()
    for p in parts:
        run.feed([p])
        time.sleep(0.05)
    time.sleep(2)
    gcs_server.start()
    rc = run.close(120)
    records = json_lines(run.stderr)
    drops = [r for r in records if r["severity"] == "ERROR" and "spool full" in r["message"]]
    dropped = [d for r in drops for d in r["dropped"]]
    lost = sum(r["lost"].get("packets", 0) for r in drops)
    uploaded = gcs_server.objects("ptspool")
    assert rc == 1 and "dropped by the spool limit" in run.stderr.decode().splitlines()[-1]
    assert len(dropped) >= 6 and all(
        Path(d).name in r["message"] for r in drops for d in r["dropped"]
    )
    # the oldest went first: every dropped part is older than every uploaded one
    kept = sorted(Path(n).name for n in uploaded)
    assert max(Path(d).name for d in dropped) < min(kept[1:] or ["~"])
    assert sorted([*kept, *(Path(d).name for d in dropped)]) == sorted(p.name for p in parts)
    got = sum(len(packets_of(data)) for data in uploaded.values())
    assert got + lost == sent  # every packet is either in the bucket or counted as lost
    assert not any(p.exists() for p in parts)  # nothing stranded on disk


# ------------------------------------------------------------------ --check


def test_check_passes_on_a_writable_directory_and_leaves_no_probe(tmp_path):
    dest = tmp_path / "dest"
    r = run_pcaptool("upload", "--dest", str(dest), "--prefix", PREFIX, "--check", env=env_for())
    assert r.returncode == 0, r.stderr.decode()
    (notice,) = json_lines(r.stderr)
    assert notice["message"] == f"destination ready: {dest / PREFIX}"
    assert list((dest / PREFIX).iterdir()) == []


@needs_root
def test_check_fails_fast_on_a_read_only_destination(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "ptspool", str(ro)], check=True)
    try:
        started = time.monotonic()
        r = run_pcaptool("upload", "--dest", str(ro), "--prefix", PREFIX, "--check", env=env_for())
        took = time.monotonic() - started
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert r.returncode == 1 and took < 15
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("pcaptool: error: destination is read-only")


def test_check_on_cloud_storage_names_a_missing_bucket(gcs_server, tmp_path):
    gcs_server.make_bucket("ptspool-there")
    ok = run_pcaptool(
        "upload", "-b", "ptspool-there", "--prefix", PREFIX, "--check", env=env_for(gcs_server)
    )
    assert ok.returncode == 0, ok.stderr.decode()
    assert json.loads(ok.stderr)["message"] == f"destination ready: gs://ptspool-there/{PREFIX}"
    r = run_pcaptool(
        "upload", "-b", "ptspool-absent", "--prefix", PREFIX, "--check", env=env_for(gcs_server)
    )
    assert r.returncode == 1
    assert r.stderr.decode() == "pcaptool: error: gs://ptspool-absent: no such bucket\n"


# ------------------------------------------------------------------ bucket names


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("My_Bucket", "lowercase"),
        ("ab", "3 to 63"),
        ("x" * 64, "3 to 63"),
        ("a..b", "dot-separated"),
        ("192.168.1.1", "IP address"),
        ("goog-pcaps", "goog"),
        ("my-google-pcaps", "google"),
        ("-pcaps", "starting and ending"),
    ],
)
def test_an_invalid_bucket_name_is_refused_before_anything_else(name, why, tmp_path):
    (part,) = write_parts(tmp_path / "parts", 1, packets=2)
    r = run_pcaptool("upload", "-b", name, "--prefix", PREFIX, str(part), env=env_for())
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.count("\n") == 1 and "is not a Cloud Storage bucket name" in err and why in err
    assert part.exists()


@needs_root
def test_a_destination_that_turns_read_only_later_keeps_parts_and_retries(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    watch = tmp_path / "parts"
    watch.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "ptspool", str(dest)], check=True)
    try:
        run = Running(
            "--dest", str(dest), "--prefix", PREFIX, "--watch", str(watch), "--poll", "0.1",
            "--retry-later", "1", env=env_for(),
        )  # fmt: skip
        first, second = write_parts(tmp_path / "staging", 2, packets=20)
        first.rename(watch / first.name)
        run.expect_urls(1)
        subprocess.run(["mount", "-o", "remount,ro", str(dest)], check=True)
        second.rename(watch / second.name)
        deadline = time.monotonic() + 30
        while b"destination is read-only" not in run.stderr and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (watch / second.name).exists()  # kept for the retry
        subprocess.run(["mount", "-o", "remount,rw", str(dest)], check=True)
        (url,) = run.expect_urls(1, timeout=60)
        run.proc.send_signal(signal.SIGTERM)
        rc = run.wait(30)
        copies = {p.name: p.read_bytes() for p in (dest / PREFIX).iterdir()}
    finally:
        subprocess.run(["umount", "-l", str(dest)], check=False)
    assert rc == 0, run.stderr.decode()
    errors = [r for r in json_lines(run.stderr) if r["severity"] == "ERROR"]
    assert errors and all(
        "read-only" in e["message"] and "retrying" in e["message"] for e in errors
    ), [e["message"] for e in errors]
    assert url == str(dest / PREFIX / second.name)
    assert sorted(copies) == sorted([first.name, second.name]) and list(watch.iterdir()) == []
    assert packets_of(copies[second.name]) == packets_of(pcap_bytes(20, start=20))


@needs_root
def test_the_sidecar_with_a_read_only_destination_fails_fast_and_never_goes_ready(tmp_path):
    from test_entrypoint import free_port, run_entrypoint, sidecar_env

    mount = tmp_path / "pcap"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "ptspool", str(mount)], check=True)
    try:
        port = str(free_port())
        env = sidecar_env(tmp_path, PCAP_IFACE="lo", GCS_MOUNT=str(mount), PCAP_HC_PORT=port)
        started = time.monotonic()
        r = run_entrypoint(env, timeout=60)
        took = time.monotonic() - started
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert r.returncode == 1 and took < 30, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("pcaptool: error:")]
    assert len(errors) == 1 and "destination is read-only" in errors[0], r.stderr
    assert "pcaptool sidecar starting" not in r.stderr  # never got as far as going ready
    assert not (tmp_path / "ready").exists()


def test_sigint_drains_like_sigterm(gcs_server, tmp_path):
    """Ctrl-C, or SIGINT to the whole process group: the same clean drain, exit 0."""
    gcs_server.make_bucket("ptspool-int")
    parts = write_parts(tmp_path / "parts", 2, packets=5)
    run = Running("-b", "ptspool-int", "--prefix", PREFIX, env=env_for(gcs_server))
    run.feed(parts)
    run.expect_urls(2)
    run.proc.send_signal(signal.SIGINT)
    assert run.wait(30) == 0, run.stderr.decode()
    last = json_lines(run.stderr)[-1]
    assert last["message"].startswith("SIGINT: stopped; 0 file(s) left") and last["uploaded"] == 2
    assert b"Traceback" not in run.stderr and b"KeyboardInterrupt" not in run.stderr
