"""`pcaptool compress` as a real process; gunzip and tshark are the oracles."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rotate import packets_of, pcap_bytes, tshark_count, wait_for

from conftest import CORPUS, PCAPTOOL, needs_root, pcaptool_env, run_pcaptool
from pcaptool.sidecar.compress import compress_file


def out_paths(res) -> list[Path]:
    return [Path(line) for line in res.stdout.decode().splitlines()]


def check_gz(gz: Path, original: bytes) -> None:
    assert subprocess.run(["gunzip", "-t", str(gz)], capture_output=True).returncode == 0
    plain = subprocess.run(["gunzip", "-c", str(gz)], capture_output=True, check=True).stdout
    assert plain == original


def test_compress_a_part(tmp_path):
    data = pcap_bytes(2000)
    src = tmp_path / "part__eth0__20261126T000000.pcap"
    src.write_bytes(data)
    res = run_pcaptool("compress", str(src))
    assert res.returncode == 0, res.stderr
    assert out_paths(res) == [tmp_path / (src.name + ".gz")]
    gz = out_paths(res)[0]
    check_gz(gz, data)
    assert tshark_count(gz) == 2000  # Wireshark reads it as it is
    assert packets_of(gz) == packets_of(data)
    assert not src.exists()
    assert sorted(os.listdir(tmp_path)) == [gz.name]  # no temporary file left
    assert len(gz.read_bytes()) < len(data) / 3


def test_corpus_pcapng_from_stdin_paths(tmp_path, corpus):
    names = ["zeek-http-chunked.pcapng", "gopacket-pcapng-multi-idb.pcapng", "zeek-http-get.pcap"]
    srcs = []
    for name in names:
        (tmp_path / name).write_bytes((CORPUS / name).read_bytes())
        srcs.append(tmp_path / name)
    stdin = "".join(f"{p}\n" for p in srcs).encode()
    res = run_pcaptool("compress", input=stdin)
    assert res.returncode == 0, res.stderr
    assert out_paths(res) == [tmp_path / (n + ".gz") for n in names]  # order kept
    for name, gz in zip(names, out_paths(res), strict=True):
        check_gz(gz, (CORPUS / name).read_bytes())
        assert tshark_count(gz) == tshark_count(CORPUS / name)


def test_disabled_passes_paths_through(tmp_path):
    srcs = []
    for i in range(3):
        srcs.append(tmp_path / f"part{i}.pcap")
        srcs[-1].write_bytes(pcap_bytes(5))
    stdin = "".join(f"{p}\n" for p in srcs).encode()
    for env_value in ("false", "0"):
        res = run_pcaptool(
            "compress", input=stdin, env=pcaptool_env() | {"PCAP_COMPRESS": env_value}
        )
        assert res.returncode == 0, res.stderr
        assert out_paths(res) == srcs
        assert sorted(tmp_path.iterdir()) == srcs  # untouched
    res = run_pcaptool("compress", "--no-compress", str(srcs[0]))
    assert out_paths(res) == [srcs[0]]


def test_source_removed_only_after_the_gz_is_complete(tmp_path):
    """Sample the directory while a big file is compressed: whenever the source is gone,
    the .gz is there with its final size; a temporary name is the only partial file."""
    rng = random.Random(1)
    data = b"".join(rng.randbytes(100) + bytes(400) for _ in range(60_000))  # ~30 MB
    src = tmp_path / "big.pcap"
    gz = tmp_path / "big.pcap.gz"
    for _attempt in range(3):  # a loaded machine may not schedule the sampler in time
        gz.unlink(missing_ok=True)
        src.write_bytes(data)
        states = []
        done = threading.Event()

        def sample(states=states, done=done):
            while not done.is_set():
                names = set(os.listdir(tmp_path))
                size = gz.stat().st_size if "big.pcap.gz" in names else None
                states.append((names, size))

        t = threading.Thread(target=sample)
        t.start()
        try:
            res = run_pcaptool("compress", str(src))
        finally:
            done.set()
            t.join()
        assert res.returncode == 0, res.stderr
        final = gz.stat().st_size
        check_gz(gz, data)
        for names, size in states:
            assert names & {"big.pcap", "big.pcap.gz"}, names  # never neither
            if "big.pcap.gz" in names:
                assert size == final  # visible only complete
            if "big.pcap" not in names:
                assert "big.pcap.gz" in names
        if any(n.startswith(".big.pcap.gz.") for names, _ in states for n in names):
            return  # the sampler saw the work in progress
    pytest.fail("the sampler never ran while compress was writing")


def test_existing_gz_is_not_overwritten(tmp_path):
    src = tmp_path / "a.pcap"
    src.write_bytes(pcap_bytes(3))
    (tmp_path / "a.pcap.gz").write_bytes(b"earlier")
    res = run_pcaptool("compress", str(src))
    assert res.returncode == 1
    assert (tmp_path / "a.pcap.gz").read_bytes() == b"earlier"
    assert src.read_bytes() == pcap_bytes(3)
    assert out_paths(res) == [src]  # passed on uncompressed rather than lost
    err = [json.loads(line) for line in res.stderr.decode().splitlines()[:-1]]
    assert err[0]["severity"] == "ERROR" and "not overwriting" in err[0]["message"]
    assert res.stderr.decode().splitlines()[-1].startswith("pcaptool: error:")


def test_missing_file_is_logged_and_the_rest_goes_on(tmp_path):
    good = tmp_path / "good.pcap"
    good.write_bytes(pcap_bytes(3))
    res = run_pcaptool("compress", input=f"{tmp_path}/nope.pcap\n{good}\n".encode())
    assert res.returncode == 1
    assert out_paths(res) == [tmp_path / "good.pcap.gz"]
    assert b"no such file" in res.stderr and b"Traceback" not in res.stderr


@needs_root
def test_disk_full_keeps_the_source(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "ptrot-full", str(mnt)], check=True)
    try:
        data = random.Random(2).randbytes(2_000_000)  # incompressible: the .gz needs 2 MB more
        src = mnt / "part.pcap"
        src.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        res = run_pcaptool("compress", str(src))
        assert res.returncode == 1
        assert b"No space left" in res.stderr and b"Traceback" not in res.stderr
        assert os.listdir(mnt) == ["part.pcap"]  # no .gz, no temporary file
        assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
        assert out_paths(res) == [src]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_watch_compresses_finished_files_until_sigterm(tmp_path):
    proc = subprocess.Popen(
        [*PCAPTOOL, "compress", "--watch", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    try:
        hidden = tmp_path / ".part__x__20261126T000000.pcap.tmp"
        hidden.write_bytes(pcap_bytes(4))  # being written: not touched
        for i in range(3):
            tmp = tmp_path / f".p{i}.tmp"
            tmp.write_bytes(pcap_bytes(4 + i))
            tmp.rename(tmp_path / f"p{i}.pcap")
        wait_for(lambda: all((tmp_path / f"p{i}.pcap.gz").exists() for i in range(3)))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.decode().splitlines() == [str(tmp_path / f"p{i}.pcap.gz") for i in range(3)]
    for i in range(3):
        assert gzip.decompress((tmp_path / f"p{i}.pcap.gz").read_bytes()) == pcap_bytes(4 + i)
    assert hidden.exists()


def test_sigterm_on_stdin_finishes_what_is_on_the_way(tmp_path):
    proc = subprocess.Popen(
        [*PCAPTOOL, "compress", "--drain-timeout", "5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    first = tmp_path / "first.pcap"
    first.write_bytes(pcap_bytes(10))
    proc.stdin.write(f"{first}\n".encode())
    proc.stdin.flush()
    wait_for(lambda: (tmp_path / "first.pcap.gz").exists())
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    last = tmp_path / "last.pcap"  # the stage before closes its last part after SIGTERM
    last.write_bytes(pcap_bytes(20))
    proc.stdin.write(f"{last}\n".encode())
    proc.stdin.close()
    out = proc.stdout.read()
    assert proc.wait(timeout=20) == 0, proc.stderr.read()
    assert out.decode().splitlines() == [f"{first}.gz", f"{last}.gz"]
    check_gz(tmp_path / "last.pcap.gz", pcap_bytes(20))


def test_paths_and_watch_together_is_a_usage_error(tmp_path):
    res = run_pcaptool("compress", "--watch", str(tmp_path), "x.pcap")
    assert res.returncode == 2 and res.stderr.startswith(b"pcaptool: error:")


@pytest.mark.parametrize("level", ["0", "1", "3"])
def test_other_levels_are_plain_gzip_too(tmp_path, level):
    data = pcap_bytes(300)
    src = tmp_path / "p.pcap"
    src.write_bytes(data)
    res = run_pcaptool("compress", "--level", level, str(src))
    assert res.returncode == 0, res.stderr
    check_gz(out_paths(res)[0], data)


def test_reader_gone_is_quiet(tmp_path):
    srcs = []
    for i in range(3):
        srcs.append(tmp_path / f"p{i}.pcap")
        srcs[-1].write_bytes(pcap_bytes(3))
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read what compress prints
    try:
        res = subprocess.run(
            [*PCAPTOOL, "compress", *map(str, srcs)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=pcaptool_env(),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert res.returncode == 0 and res.stderr == b""
    assert (tmp_path / "p0.pcap.gz").exists()  # the file in hand was finished first


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3 * 1024 * 1024), st.integers(0, 3))
def test_compress_file_round_trips_any_bytes(data, level):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "x.bin"
        src.write_bytes(data)
        out = compress_file(src, level)
        assert out == Path(tmp) / "x.bin.gz" and not src.exists()
        assert gzip.decompress(out.read_bytes()) == data
        assert os.listdir(tmp) == ["x.bin.gz"]


def test_sigterm_with_path_arguments_finishes_the_file_in_hand(tmp_path):
    rng = random.Random(3)
    blob = b"".join(rng.randbytes(200) + bytes(300) for _ in range(40_000))  # ~20 MB each
    srcs = []
    for i in range(8):
        srcs.append(tmp_path / f"p{i}.pcap")
        srcs[-1].write_bytes(blob)
    proc = subprocess.Popen(
        [*PCAPTOOL, "compress", *map(str, srcs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pcaptool_env(),
    )
    wait_for(lambda: (tmp_path / "p0.pcap.gz").exists())
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    done = [Path(line) for line in out.decode().splitlines()]
    assert 1 <= len(done) < 8  # stopped early, after finishing what it had started
    for i, src in enumerate(srcs):
        if i < len(done):
            assert done[i] == tmp_path / f"p{i}.pcap.gz" and not src.exists()
            assert gzip.decompress(done[i].read_bytes()) == blob
        else:
            assert src.read_bytes() == blob  # untouched, for a later run
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_two_compressors_racing_on_one_file(tmp_path):
    data = random.Random(4).randbytes(8_000_000)
    src = tmp_path / "race.pcap"
    src.write_bytes(data)
    src.chmod(0o640)
    procs = [
        subprocess.Popen(
            [*PCAPTOOL, "compress", str(src)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=pcaptool_env(),
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    gz = tmp_path / "race.pcap.gz"
    assert sorted(os.listdir(tmp_path)) == ["race.pcap.gz"]  # nothing else left behind
    assert gzip.decompress(gz.read_bytes()) == data
    assert gz.stat().st_mode & 0o777 == 0o600  # private, whatever the source allowed
    # one made it; the other says why not and passes on no path that does not exist
    assert sorted(out.strip() for out, _ in results) == [b"", str(gz).encode()]
    assert sorted(p.returncode for p in procs) == [0, 1]
