"""`pcaptool merge gs://…` against a real fake-gcs-server on loopback (`gcs_server`)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CORPUS, PCAPTOOL, pcaptool_env, run_pcaptool
from pcaptool.capfile.reader import read_packets
from pcaptool.errors import CaptureFormatError
from pcaptool.merge import rfc3339_ns

pytestmark = pytest.mark.skipif(not shutil.which("mergecap"), reason="needs mergecap")


def packets(path: Path) -> list[tuple[int, bytes]]:
    out = []
    try:
        for p in read_packets(path):
            out.append((p.ts_ns, p.data))
    except CaptureFormatError:
        pass
    return out


@pytest.fixture
def parts(tmp_path) -> list[Path]:
    """Six gzip parts split from a corpus capture with editcap, plus one plain pcap part."""
    if not CORPUS.is_dir():
        pytest.skip("the corpus is absent")
    d = tmp_path / "parts"
    d.mkdir()
    source = CORPUS / "zeek-http-1000-requests-ipv6.pcap.gz"
    subprocess.run(["editcap", "-c", "700", str(source), str(d / "part.pcap")], check=True)
    made = []
    for p in sorted(d.iterdir()):
        made.append(p.with_name(p.name + ".gz"))
        made[-1].write_bytes(gzip.compress(p.read_bytes()))
        p.unlink()
    extra = d / "zz-icmp.pcap"
    shutil.copy(CORPUS / "zeek-icmp6-ping.pcap", extra)
    return [*made, extra]


def upload(gcs, bucket: str, prefix: str, files: list[Path]) -> None:
    client = gcs.client()
    try:
        b = client.create_bucket(bucket)
    except Exception:
        b = client.bucket(bucket)
    for f in files:
        b.blob(f"{prefix}{f.name}").upload_from_filename(str(f))


def run(gcs, *args: str):
    return run_pcaptool(*args, env=pcaptool_env() | gcs.env)


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    # the default cache ($XDG_CACHE_HOME/pcaptool/gcs) of every run here is the test's own
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def mergecap(out: Path, inputs: list[Path]) -> None:
    subprocess.run(["mergecap", "-w", str(out), *map(str, inputs)], check=True)


def test_merge_from_gcs_and_cache_reused(gcs_server, parts, tmp_path):
    upload(gcs_server, "ptmrg-run", "proj/svc/region/rev/1700000000/inst/", parts)
    # objects that are not parts, and a neighbouring folder, stay out
    b = gcs_server.client().bucket("ptmrg-run")
    b.blob("proj/svc/region/rev/1700000000/inst/README.txt").upload_from_string(b"hello")
    b.blob("proj/svc/region/rev/1700000000/inst2/other.pcap").upload_from_filename(str(parts[0]))
    cache = tmp_path / "cache"
    url = "gs://ptmrg-run/proj/svc/region/rev/1700000000/inst"
    out = tmp_path / "full.pcap"
    res = run(gcs_server, "merge", url, "-o", str(out), "--cache-dir", str(cache), "-v")
    assert res.returncode == 0, res.stderr.decode()
    assert f"{len(parts)} objects: {len(parts)} downloaded" in res.stderr.decode()
    mergecap(tmp_path / "m.pcap", parts)
    assert packets(out) == packets(tmp_path / "m.pcap")
    assert len(packets(out)) > 4000
    cached = sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert [p.name for p in cached] == sorted(p.name for p in parts)
    # each verified file has its note, so a rerun need not read it again
    assert all((p.parent / f".{p.name}.verified").is_file() for p in cached)
    assert all(p.read_bytes() == (parts[0].parent / p.name).read_bytes() for p in cached)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cached}

    # second run: everything from the cache, nothing downloaded, files untouched
    out2 = tmp_path / "again.pcap"
    res = run(gcs_server, "merge", url, "-o", str(out2), "--cache-dir", str(cache), "-v")
    assert res.returncode == 0, res.stderr.decode()
    assert f"{len(parts)} objects: 0 downloaded (0 bytes), {len(parts)} from the cache" in (
        res.stderr.decode()
    )
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cached} == before
    assert out2.read_bytes() == out.read_bytes()

    # a cached file that no longer matches the object's checksum is fetched again
    victim = cached[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    res = run(gcs_server, "merge", url, "-o", str(out2), "--cache-dir", str(cache), "-v")
    assert res.returncode == 0, res.stderr.decode()
    assert "1 downloaded" in res.stderr.decode()
    assert out2.read_bytes() == out.read_bytes()


def test_parts_uploaded_by_pcaptool_upload(gcs_server, parts, tmp_path):
    # The pipeline's own uploader puts the parts there; merge gets them back.
    gcs_server.client().create_bucket("ptmrg-pipe")
    staged = tmp_path / "staged"
    staged.mkdir()
    for p in parts:
        shutil.copy(p, staged / p.name)  # upload deletes what it has uploaded
    res = run(
        gcs_server,
        "upload",
        "--bucket",
        "ptmrg-pipe",
        "--prefix",
        "proj/svc/run1",
        *sorted(map(str, staged.iterdir())),
    )
    if res.returncode != 0:
        pytest.skip(f"pcaptool upload is not usable here: {res.stderr.decode()[-300:]}")
    out = tmp_path / "full.pcap"
    res = run(
        gcs_server,
        "merge",
        "gs://ptmrg-pipe/proj/svc/run1",
        "-o",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert res.returncode == 0, res.stderr.decode()
    mergecap(tmp_path / "m.pcap", parts)
    assert packets(out) == packets(tmp_path / "m.pcap")


def test_glob_and_list_without_download(gcs_server, parts, tmp_path):
    upload(gcs_server, "ptmrg-list", "run/", parts)
    cache = tmp_path / "cache"
    res = run(gcs_server, "merge", "--list", "gs://ptmrg-list/run/*.gz", "--cache-dir", str(cache))
    assert res.returncode == 0, res.stderr.decode()
    rows = [line.split("\t") for line in res.stdout.decode().splitlines()]
    assert rows[0][:3] == ["name", "size", "updated"]
    gz_parts = [p for p in parts if p.name.endswith(".gz")]
    assert [r[0] for r in rows[1:]] == [f"gs://ptmrg-list/run/{p.name}" for p in gz_parts]
    assert [int(r[1]) for r in rows[1:]] == [p.stat().st_size for p in gz_parts]
    assert all(r[2].endswith("Z") and r[3] == "-" for r in rows[1:])
    assert not cache.exists()  # --list never downloads

    # once the parts are in the cache, --list reads their time range from there
    out = tmp_path / "o.pcap"
    url = "gs://ptmrg-list/run/*.gz"
    assert run(gcs_server, "merge", url, "-o", str(out), "--cache-dir", str(cache)).returncode == 0
    res = run(gcs_server, "merge", "--list", url, "--cache-dir", str(cache))
    rows = [line.split("\t") for line in res.stdout.decode().splitlines()][1:]
    for row, part in zip(rows, gz_parts, strict=True):
        times = [p[0] for p in packets(part)]
        assert (rfc3339_ns(row[3]), rfc3339_ns(row[4]), int(row[5])) == (
            times[0],
            times[-1],
            len(times),
        )


def test_corrupt_object_skipped_with_skip_bad(gcs_server, parts, tmp_path):
    bad = tmp_path / "part_99999_corrupt.pcap.gz"
    bad.write_bytes(gzip.compress(os.urandom(5000)))
    upload(gcs_server, "ptmrg-bad", "p/", [*parts, bad])
    cache = tmp_path / "cache"
    out = tmp_path / "out.pcap"
    args = ["merge", "gs://ptmrg-bad/p/", "-o", str(out), "--cache-dir", str(cache)]
    res = run(gcs_server, *args)
    assert res.returncode == 1
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "gs://ptmrg-bad/p/part_99999_corrupt.pcap.gz" in lines[0]
    res = run(gcs_server, *args, "--skip-bad")
    assert res.returncode == 0, res.stderr.decode()
    assert "part_99999_corrupt.pcap.gz" in res.stderr.decode()
    assert "Traceback" not in res.stderr.decode()
    mergecap(tmp_path / "m.pcap", parts)
    assert packets(out) == packets(tmp_path / "m.pcap")


def test_missing_bucket_and_empty_prefix_are_one_line(gcs_server, tmp_path):
    res = run(gcs_server, "merge", "gs://ptmrg-no-such-bucket/x/", "-o", str(tmp_path / "o"))
    assert res.returncode == 1
    lines = res.stderr.decode().strip().splitlines()
    assert lines == ["pcaptool: error: gs://ptmrg-no-such-bucket: bucket not found"]
    gcs_server.client().create_bucket("ptmrg-empty")
    res = run(gcs_server, "merge", "gs://ptmrg-empty/nothing/", "-o", str(tmp_path / "o"))
    assert res.returncode == 1
    assert "no parts under this prefix" in res.stderr.decode()
    assert len(res.stderr.decode().strip().splitlines()) == 1


def test_server_down_is_one_line(gcs_server, tmp_path):
    env = pcaptool_env() | {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}  # nothing listens
    res = run_pcaptool(
        "merge", "gs://b/p/", "-o", str(tmp_path / "o"), "--timeout", "2", env=env, timeout=60
    )
    assert res.returncode == 1
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot reach Cloud Storage" in lines[0], lines


def test_gcs_ndjson_parts(gcs_server, tmp_path):
    d = tmp_path / "nd"
    d.mkdir()
    for name in ("zeek-http-get.pcap", "zeek-icmp-ping.pcap"):
        res = run_pcaptool("translate", str(CORPUS / name))
        if res.returncode != 0 or not res.stdout.startswith(b"{"):
            pytest.skip("pcaptool translate is not built on this branch")
        (d / f"{name}.json.gz").write_bytes(gzip.compress(res.stdout))
    upload(gcs_server, "ptmrg-nd", "j/", sorted(d.iterdir()))
    res = run(
        gcs_server,
        "merge",
        "gs://ptmrg-nd/j/",  # NDJSON found by the part names, no --format needed
        "-o",
        "-",
        "--cache-dir",
        str(tmp_path / "c"),
    )
    assert res.returncode == 0, res.stderr.decode()
    assert len(res.stdout.splitlines()) == 14 + len(
        [1 for _ in read_packets(CORPUS / "zeek-icmp-ping.pcap")]
    )


def test_progress_bar_on_a_terminal_only(gcs_server, parts, tmp_path):
    import pty

    upload(gcs_server, "ptmrg-tty", "r/", parts)
    main, child = pty.openpty()
    try:
        proc = subprocess.run(
            [*PCAPTOOL, "merge", "gs://ptmrg-tty/r/", "-o", str(tmp_path / "o.pcap")]
            + ["--cache-dir", str(tmp_path / "c")],
            stderr=child,
            stdout=subprocess.DEVNULL,
            env=pcaptool_env() | gcs_server.env | {"COLUMNS": "120"},
            timeout=120,
            check=False,
        )
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
    assert proc.returncode == 0
    assert f"download {len(parts)}/{len(parts)} files".encode() in shown
    # and quiet when stderr is not a terminal
    res = run(
        gcs_server,
        "merge",
        "gs://ptmrg-tty/r/",
        "-o",
        str(tmp_path / "p.pcap"),
        "--cache-dir",
        str(tmp_path / "c2"),
    )
    assert res.returncode == 0 and res.stderr == b""


def test_no_credentials_is_one_line(tmp_path):
    env = {k: v for k, v in pcaptool_env().items() if k not in ("STORAGE_EMULATOR_HOST",)}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    # keep google.auth's metadata-server probe on loopback, where nothing answers
    env |= {"HOME": str(tmp_path), "GCE_METADATA_HOST": "127.0.0.1:9"}
    env |= {"GCE_METADATA_IP": "127.0.0.1:9", "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    res = run_pcaptool("merge", "gs://b/p/", "-o", str(tmp_path / "o"), env=env, timeout=60)
    assert res.returncode == 1
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "credentials" in lines[0], lines


def test_permission_denied_is_one_line(tmp_path):
    # A loopback server that answers like Cloud Storage does to a caller without access.
    import http.server
    import json
    import threading

    class Deny(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = json.dumps(
                {
                    "error": {
                        "code": 403,
                        "message": "caller does not have storage.objects.list access",
                        "errors": [{"reason": "forbidden"}],
                    }
                }
            ).encode()
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Deny)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = pcaptool_env() | {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{server.server_port}"}
        res = run_pcaptool("merge", "gs://private/run/", "-o", str(tmp_path / "o"), env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert res.returncode == 1
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0], lines
    assert lines[0].startswith("pcaptool: error: gs://private/run/")


def test_listing_reads_every_page(gcs_server, monkeypatch):
    from pcaptool.storage.fetch import list_objects

    client = gcs_server.client()
    bucket = client.create_bucket("ptmrg-pages")
    names = [f"run/part__eth0__{i:04d}.pcap.gz" for i in range(23)]
    for name in names:
        bucket.blob(name).upload_from_string(b"x")
    bucket.blob("run/notes.txt").upload_from_string(b"not a part")
    bucket.blob("run2/part__eth0__0000.pcap.gz").upload_from_string(b"another folder")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    found = list_objects("gs://ptmrg-pages/run", (".pcap.gz",), page_size=5)
    assert [o.name for o in found] == names
    assert all(o.size == 1 and o.crc32c for o in found)


def test_unwritable_cache_is_one_line(gcs_server, parts, tmp_path):
    upload(gcs_server, "ptmrg-ro", "r/", parts[:2])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    # the default cache: $XDG_CACHE_HOME/pcaptool/gcs
    env = pcaptool_env() | gcs_server.env | {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    res = run_pcaptool("merge", "gs://ptmrg-ro/r/", "-o", str(tmp_path / "o"), env=env)
    assert res.returncode == 0, res.stderr.decode()
    assert (tmp_path / "xdg" / "pcaptool" / "gcs" / "ptmrg-ro" / "r" / parts[0].name).is_file()
    res = run(
        gcs_server,
        "merge",
        "gs://ptmrg-ro/r/",
        "-o",
        str(tmp_path / "o"),
        "--cache-dir",
        str(blocker),
    )
    assert res.returncode == 1
    lines = res.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot write the cache" in lines[0], lines


HOSTILE_NAMES = {
    "/abs.pcap": "absolute",
    "run/../evil.pcap": "climbs out",
    "run//empty.pcap": "empty or '.'",
    "run/./dot.pcap": "empty or '.'",
    "run/" + "a" * 300 + ".pcap": "too long",
    "run/nul\x00.pcap": "NUL",
    "run/ctl\x01.pcap": "control character",
}


def test_hostile_object_names_are_skipped_with_a_warning_and_the_rest_merged(tmp_path):
    from gcs_fixtures import GcsServer
    from test_rotate import packets_of, pcap_bytes

    # The memory backend keeps every name verbatim (the filesystem one rewrites some).
    server = GcsServer(tmp_path / "gcs", backend="memory")
    server.start()
    try:
        b = server.make_bucket("ptmrg-hostile")
        good = {"run/a.pcap": pcap_bytes(5), "run/b.pcap": pcap_bytes(7, start=5)}
        for name, data in good.items():
            b.blob(name).upload_from_string(data)
        for name in HOSTILE_NAMES:
            b.blob(name).upload_from_string(pcap_bytes(3, start=100))
        cache = tmp_path / "cache"
        out = tmp_path / "merged.pcap"
        r = run(server, "merge", "gs://ptmrg-hostile", "--cache-dir", str(cache), "-o", str(out))
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr.decode()
    warnings = r.stderr.decode().splitlines()
    assert len(warnings) == len(HOSTILE_NAMES), warnings
    for words in HOSTILE_NAMES.values():
        assert any(w.startswith("pcaptool: warning: ") and words in w for w in warnings), words
    assert all("skipped this object" in w for w in warnings)
    assert packets_of(out.read_bytes()) == packets_of(pcap_bytes(12))
    # nothing was written outside the cache, and the cache holds only the good parts
    cached = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert [c for c in cached if not Path(c).name.startswith(".")] == [
        f"ptmrg-hostile/{n}" for n in sorted(good)
    ]
    assert not (tmp_path / "evil.pcap").exists() and not (cache / "evil.pcap").exists()
