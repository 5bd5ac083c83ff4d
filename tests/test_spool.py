"""The spool counts everything the parts directory holds (issue 13): the part rotate is
writing and finished parts compress has not passed on yet weigh on the memory-backed
directory as much as the parts handed to upload, so they count against --spool-bytes."""

from __future__ import annotations

import time
from pathlib import Path

from test_rotate import packets_of, pcap_bytes
from test_upload import PREFIX, Running, env_for, json_lines

from pcaptool.storage.uploader import Uploader, directory_bytes


def test_directory_bytes_counts_temporary_files_and_subdirectories(tmp_path):
    (tmp_path / "pcap").mkdir()
    (tmp_path / "pcap" / ".part__eth0__1.pcap.abc.tmp").write_bytes(b"x" * 300)
    (tmp_path / "pcap" / "part__eth0__1.pcap").write_bytes(b"x" * 200)
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "part__eth0__1.json.gz").write_bytes(b"x" * 50)
    assert directory_bytes(str(tmp_path)) == 550
    assert directory_bytes(str(tmp_path / "gone")) == 0


def test_spooled_is_the_directory_plus_parts_waiting_outside_it(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / ".being-written.tmp").write_bytes(b"x" * 1000)
    inside = parts / "a.pcap"
    inside.write_bytes(b"x" * 400)
    outside = tmp_path / "elsewhere.pcap"
    outside.write_bytes(b"x" * 70)
    up = Uploader(None, on_uploaded=print, log=print, spool_dirs=[parts])  # never started
    up.submit(inside)
    up.submit(outside)
    assert up.spooled() == 1000 + 400 + 70
    alone = Uploader(None, on_uploaded=print, log=print)
    alone.submit(inside)
    assert alone.spooled() == 400  # without spool_dirs: only what it was handed


def test_parts_not_handed_over_yet_count_against_the_spool(gcs_server, tmp_path):
    """Storage down; the directory holds 40 KB upload was never handed (compress's input,
    rotate's part in progress) beside 5 handed parts of 10 KB; limit 70 KB. Counting only
    the handed parts (50 KB) nothing would be dropped; counting the directory, the oldest
    handed parts go until it holds 70 KB, each named, and every packet of the handed parts
    is uploaded or counted lost. What upload was not handed is not its to drop."""
    gcs_server.make_bucket("ptspooldir")
    directory = tmp_path / "pcap-tmp" / "pcap"
    directory.mkdir(parents=True)
    backlog = directory / "part__eth0__20260102T030000.pcap"  # compress has not got to it
    backlog.write_bytes(b"\0" * 30_000)
    in_progress = directory / ".part__eth0__20260102T030999.pcap.x1.tmp"
    in_progress.write_bytes(b"\0" * 10_000)
    handed = [directory / f"part__eth0__20260102T0301{i:02d}.pcap" for i in range(5)]
    contents = [pcap_bytes(40, start=i * 40) for i in range(5)]  # about 10 KB each
    size = len(contents[0])
    sent = sum(len(packets_of(data)) for data in contents)
    limit = 40_000 + 2 * size + size // 2
    gcs_server.stop()
    run = Running(
        "-b", "ptspooldir", "--prefix", PREFIX, "--jobs", "1", "--spool-bytes", str(limit),
        "--spool-dir", str(tmp_path / "pcap-tmp"), "--retry-timeout", "1", "--retry-later", "1",
        env=env_for(gcs_server),
    )  # fmt: skip
    run.wait_started()
    for p, data in zip(handed, contents, strict=True):
        p.write_bytes(data)  # as rotate finishes it
        run.feed([p])
        time.sleep(0.05)
    time.sleep(2)
    gcs_server.start()
    rc = run.close(120)
    drops = [r for r in json_lines(run.stderr) if "spool full" in r["message"]]
    dropped = [Path(d).name for r in drops for d in r["dropped"]]
    assert rc == 1, run.stderr.decode()[-2000:]
    assert len(dropped) >= 2 and all(r["severity"] == "ERROR" for r in drops)
    assert all(r["spooled"] <= limit for r in drops), [r["spooled"] for r in drops]
    uploaded = gcs_server.objects("ptspooldir")
    assert sorted([*(Path(n).name for n in uploaded), *dropped]) == [p.name for p in handed]
    lost = sum(r["lost"].get("packets", 0) for r in drops)
    got = sum(len(packets_of(data)) for data in uploaded.values())
    assert got + lost == sent
    assert backlog.exists() and in_progress.exists()
