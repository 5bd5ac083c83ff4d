"""`pcaptool upload` against a real fake-gcs-server on loopback, with real faults.

Faults: the server stopped for 20 s mid-run, HTTP 503/429 answers (and a lost response)
from a proxy in front of it, an object already there, a read-only and a full destination,
and SIGTERM with uploads in hand.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import google_crc32c
import pytest
from gcs_fixtures import closed_port_host

from conftest import PCAPTOOL, needs_root, pcaptool_env, run_pcaptool
from pcaptool.storage import destination, gcs
from pcaptool.storage.uploader import list_parts

PREFIX = "proj/svc/region/rev/2026/01/02/03-04/inst"
BUCKET = "pcaps"


def make_parts(directory: Path, count: int, size: int = 20_000, start: int = 0) -> list[Path]:
    """COUNT files named like rotate's parts, each with distinct content."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        p = directory / f"part__eth0__20260102T03{i // 60:02d}{i % 60:02d}.pcap.gz"
        p.write_bytes(i.to_bytes(4, "big") + os.urandom(size - 4))
        paths.append(p)
    return paths


def env_for(*servers, **extra) -> dict[str, str]:
    env = pcaptool_env()
    for var in ("PCAP_GCS_BUCKET", "GCS_MOUNT", "STORAGE_EMULATOR_HOST", "GCE_METADATA_HOST"):
        env.pop(var, None)
    for s in servers:
        env.update(s.env)
    env.update(extra)
    return env


def json_lines(stderr: bytes) -> list[dict]:
    return [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]


class Running:
    """`pcaptool upload ...` as a live process: feed paths, read URLs as they come."""

    def __init__(self, *args: str, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [*PCAPTOOL, "upload", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.urls: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr = b""
        self.started = threading.Event()
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            url = line.decode().rstrip("\n")
            self.stdout.append(url)
            self.urls.put(url)

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr += line
            if b"PCAP files available at" in line:
                self.started.set()

    def wait_started(self, timeout: float = 60) -> None:
        """Until the NOTICE line: the stop-signal handler is in place from then on."""
        assert self.started.wait(timeout), self.stderr.decode()

    def feed(self, paths) -> None:
        self.proc.stdin.write(b"".join(os.fsencode(p) + b"\n" for p in paths))
        self.proc.stdin.flush()

    def expect_urls(self, n: int, timeout: float = 60) -> list[str]:
        return [self.urls.get(timeout=timeout) for _ in range(n)]

    def close(self, timeout: float = 120) -> int:
        self.proc.stdin.close()
        return self.wait(timeout)

    def wait(self, timeout: float = 120) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._out.join(5)
        self._err.join(5)
        return rc


@pytest.fixture
def bucket(gcs_server):
    gcs_server.make_bucket(BUCKET)
    return BUCKET


# ------------------------------------------------------------------ the library


def test_upload_file_verifies_checksums_and_reports_them(gcs_server, bucket, tmp_path):
    # Over 8 MiB: google-cloud-storage switches from a multipart to a resumable upload.
    (part,) = make_parts(tmp_path, 1, size=9 * 1024 * 1024 + 7)
    client = gcs_server.client()
    result = gcs.upload_file(client.bucket(bucket), "a/part.pcap.gz", part)
    crc = google_crc32c.Checksum(part.read_bytes()).digest()
    assert result.crc32c == base64.b64encode(crc).decode()
    assert result.url == f"gs://{bucket}/a/part.pcap.gz" and not result.existed
    blob = client.bucket(bucket).get_blob("a/part.pcap.gz")
    assert (blob.size, blob.crc32c) == (part.stat().st_size, result.crc32c)
    assert blob.content_type == "application/gzip"
    assert part.exists()  # the library never deletes; the uploader does after confirmation


def test_same_content_again_counts_as_done_different_content_is_refused(
    gcs_server, bucket, tmp_path
):
    first, other = make_parts(tmp_path, 2)
    b = gcs_server.client().bucket(bucket)
    gcs.upload_file(b, "x/part", first)
    again = gcs.upload_file(b, "x/part", first)
    assert again.existed
    with pytest.raises(destination.ObjectExistsError, match="not overwritten"):
        gcs.upload_file(b, "x/part", other)
    assert gcs_server.objects(bucket) == {"x/part": first.read_bytes()}


def test_checksum_mismatch_removes_the_bad_object(gcs_server, bucket, tmp_path):
    # The file changed between hashing and sending: the server's crc32c disagrees.
    good, changed = make_parts(tmp_path, 2)
    stale = destination.file_digest(good)
    b = gcs_server.client().bucket(bucket)
    with pytest.raises(destination.ChecksumMismatchError, match="crc32c"):
        gcs.upload_file(b, "y/part", changed, digest=stale)
    assert gcs_server.objects(bucket) == {}
    assert gcs.upload_file(b, "y/part", changed).crc32c == destination.file_digest(changed).crc32c


class FlakyProxy:
    """An HTTP proxy in front of fake-gcs-server whose first upload POSTs fail.

    mode "refuse": answer STATUS without forwarding; mode "lose": forward (the object is
    created) but answer STATUS, as when a response is lost on the way back.
    """

    def __init__(
        self, upstream: str, failures: int, status: int, mode: str = "refuse", delay: float = 0
    ):
        proxy = self
        self.failures, self.status, self.mode, self.upstream = failures, status, mode, upstream
        self.delay = delay  # seconds each upload takes (slow network)
        self.seen: list[tuple[str, str, int]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upload = self.command == "POST" and "/upload/" in self.path
                failing = upload and proxy.failures > 0
                if failing:
                    proxy.failures -= 1
                if upload and proxy.delay:
                    time.sleep(proxy.delay)
                if failing and proxy.mode == "refuse":
                    proxy.seen.append((self.command, self.path, proxy.status))
                    return self._send(proxy.status, b'{"error":{"code":%d}}' % proxy.status, {})
                req = urllib.request.Request(
                    proxy.upstream + self.path, data=body, method=self.command
                )
                for k, v in self.headers.items():
                    if k.lower() not in ("host", "content-length", "connection"):
                        req.add_header(k, v)
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, data, headers = resp.status, resp.read(), resp.headers
                except urllib.error.HTTPError as err:
                    status, data, headers = err.code, err.read(), err.headers
                if failing:  # "lose": the upstream did it, the client hears an error
                    status, data = proxy.status, b'{"error":{"code":%d}}' % proxy.status
                proxy.seen.append((self.command, self.path, status))
                self._send(status, data, headers)

            def _send(self, status, data, headers):
                self.send_response(status)
                ctype = headers.get("Content-Type") if headers else None
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.env = {"STORAGE_EMULATOR_HOST": self.endpoint}
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(("status", "mode"), [(503, "refuse"), (429, "refuse"), (500, "lose")])
def test_transient_http_errors_are_retried_without_duplicates(
    gcs_server, bucket, tmp_path, status, mode
):
    parts = make_parts(tmp_path / "parts", 3)
    proxy = FlakyProxy(gcs_server.endpoint, failures=2, status=status, mode=mode)
    try:
        r = run_pcaptool(
            "upload", "-b", bucket, "--prefix", PREFIX, "--jobs", "1",
            *map(str, parts), env=env_for(proxy),
        )  # fmt: skip
    finally:
        proxy.close()
    assert r.returncode == 0, r.stderr.decode()
    assert sum(1 for _, _, st in proxy.seen if st == status) >= 2
    want = {f"{PREFIX}/{p.name}" for p in parts}
    assert set(gcs_server.objects(bucket)) == want
    urls = r.stdout.decode().split()
    assert sorted(urls) == sorted(f"gs://{bucket}/{n}" for n in want)  # each exactly once
    assert not any(p.exists() for p in parts)
    if mode == "lose":  # the retry met its own earlier success: same content, counted once
        assert any("already there" in rec["message"] for rec in json_lines(r.stderr))


# ------------------------------------------------------------------ the command


def test_stdin_paths_to_hierarchy_with_notice_and_one_log_line_each(
    gcs_server, metadata_server, bucket, tmp_path
):
    parts = make_parts(tmp_path / "parts", 4)
    contents = {p.name: p.read_bytes() for p in parts}
    env = env_for(gcs_server, metadata_server, K_SERVICE="web", K_REVISION="web-00003-abc")
    env["INSTANCE_STARTUP_TIMESTAMP"] = "2026/01/02/03-04"
    r = run_pcaptool(
        "upload", "--bucket", bucket, input=b"".join(b"%s\n" % bytes(p) for p in parts), env=env
    )
    assert r.returncode == 0, r.stderr.decode()
    prefix = f"test-project/web/us-central1/web-00003-abc/2026/01/02/03-04/{metadata_server.values['instance/id']}"
    records = json_lines(r.stderr)
    assert records[0] == {
        **records[0],
        "severity": "NOTICE",
        "message": f"PCAP files available at: gs://{bucket}/{prefix}",
    }
    assert sum(rec["message"].startswith("PCAP files available at") for rec in records) == 1
    uploads = [rec for rec in records if rec["severity"] == "INFO"]
    assert sorted(u["object"] for u in uploads) == sorted(
        f"gs://{bucket}/{prefix}/{name}" for name in contents
    )
    for u in uploads:
        assert u["bytes"] == len(contents[u["object"].rsplit("/", 1)[1]])
        assert isinstance(u["seconds"], float) and u["seconds"] >= 0
    assert sorted(r.stdout.decode().splitlines()) == sorted(u["object"] for u in uploads)
    assert gcs_server.objects(bucket) == {f"{prefix}/{n}": c for n, c in contents.items()}
    assert list_parts(tmp_path / "parts") == []


def test_existing_object_is_not_overwritten_and_the_file_stays(gcs_server, bucket, tmp_path):
    taken, fine = make_parts(tmp_path / "parts", 2)
    gcs_server.client().bucket(bucket).blob(f"{PREFIX}/{taken.name}").upload_from_string(b"older")
    r = run_pcaptool(
        "upload", "-b", bucket, "--prefix", PREFIX, str(taken), str(fine), env=env_for(gcs_server)
    )
    assert r.returncode == 1
    last = r.stderr.decode().splitlines()[-1]
    assert last.startswith("pcaptool: error: 1 file(s) not uploaded") and str(taken) in last
    errors = [rec for rec in json_lines(r.stderr) if rec["severity"] == "ERROR"]
    assert len(errors) == 1 and "not overwritten" in errors[0]["message"]
    assert taken.exists() and not fine.exists()
    objects = gcs_server.objects(bucket)
    assert objects[f"{PREFIX}/{taken.name}"] == b"older"
    assert objects[f"{PREFIX}/{fine.name}"] is not None
    assert r.stdout.decode().split() == [f"gs://{bucket}/{PREFIX}/{fine.name}"]


def test_storage_server_down_for_20s_mid_run_loses_nothing(gcs_server, bucket, tmp_path):
    parts_dir = tmp_path / "parts"
    before, during, after = (make_parts(parts_dir, 5, start=s) for s in (0, 5, 10))
    contents = {p.name: p.read_bytes() for p in (*before, *during, *after)}
    run = Running(
        "-b", bucket, "--prefix", PREFIX, "--jobs", "2", "--retry-timeout", "90",
        env=env_for(gcs_server),
    )  # fmt: skip
    try:
        run.feed(before)
        run.expect_urls(5)
        gcs_server.stop()
        run.feed(during)
        time.sleep(20)
        assert all(p.exists() for p in during)  # nothing confirmed, nothing deleted
        gcs_server.start()
        run.feed(after)
        rc = run.close()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == 0, run.stderr.decode()
    want = {f"{PREFIX}/{name}": c for name, c in contents.items()}
    assert gcs_server.objects(bucket) == want
    assert sorted(run.stdout) == sorted(f"gs://{bucket}/{n}" for n in want)  # no duplicates
    assert list_parts(parts_dir) == []


def test_a_file_that_keeps_failing_stays_on_disk_and_is_retried_later(gcs_server, bucket, tmp_path):
    (part,) = make_parts(tmp_path / "parts", 1)
    gcs_server.stop()
    run = Running(
        "-b", bucket, "--prefix", PREFIX, "--retry-timeout", "1", "--retry-later", "1",
        env=env_for(gcs_server),
    )  # fmt: skip
    run.feed([part])
    time.sleep(4)  # the in-upload retries gave up at least once
    assert part.exists()
    gcs_server.start()
    (url,) = run.expect_urls(1, timeout=60)
    assert run.close(30) == 0, run.stderr.decode()
    assert url == f"gs://{bucket}/{PREFIX}/{part.name}" and not part.exists()
    errors = [rec for rec in json_lines(run.stderr) if rec["severity"] == "ERROR"]
    assert errors and all(
        str(part) in e["message"] and "retrying in" in e["message"] for e in errors
    )


def test_sigterm_when_idle_exits_0_after_finishing(gcs_server, bucket, tmp_path):
    parts = make_parts(tmp_path / "parts", 3)
    run = Running("-b", bucket, "--prefix", PREFIX, env=env_for(gcs_server))
    run.feed(parts)
    run.expect_urls(3)
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(30) == 0
    last = json_lines(run.stderr)[-1]
    assert last["severity"] == "NOTICE" and last["message"].startswith("SIGTERM: stopped; 0 file")
    assert len(gcs_server.objects(bucket)) == 3


def test_sigterm_with_uploads_stuck_keeps_files_for_the_next_sweep(gcs_server, bucket, tmp_path):
    parts_dir = tmp_path / "parts"
    parts = make_parts(parts_dir, 4)
    gcs_server.stop()  # every upload in hand now retries refused connections
    run = Running(
        "-b", bucket, "--prefix", PREFIX, "--drain-timeout", "2", "--retry-timeout", "300",
        env=env_for(gcs_server),
    )  # fmt: skip
    run.feed(parts)
    run.wait_started()
    time.sleep(1.0)
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    rc = run.wait(60)
    waited = time.monotonic() - sent
    assert rc == 0
    # Within the drain window plus process start/exit slack, far below --retry-timeout.
    assert waited < 2 + 15, waited
    assert all(p.exists() for p in parts)
    last = json_lines(run.stderr)[-1]
    assert last["severity"] == "WARNING" and sorted(last["left"]) == sorted(map(str, parts))
    assert run.stdout == []

    gcs_server.start()
    r = run_pcaptool(
        "upload",
        "-b",
        bucket,
        "--prefix",
        PREFIX,
        "--sweep",
        str(parts_dir),
        env=env_for(gcs_server),
    )
    assert r.returncode == 0, r.stderr.decode()
    assert set(gcs_server.objects(bucket)) == {f"{PREFIX}/{p.name}" for p in parts}
    assert list_parts(parts_dir) == []


def test_sigterm_lets_the_upload_in_hand_finish_and_leaves_the_queue(gcs_server, bucket, tmp_path):
    parts_dir = tmp_path / "parts"
    parts = make_parts(parts_dir, 4)
    slow = FlakyProxy(gcs_server.endpoint, failures=0, status=503, delay=1.5)
    try:
        run = Running(
            "-b", bucket, "--prefix", PREFIX, "--jobs", "1", "--drain-timeout", "6",
            env=env_for(slow),
        )  # fmt: skip
        run.feed(parts)
        run.expect_urls(1)
        time.sleep(0.3)  # the second part is now in hand, 1.5 s from done
        run.proc.send_signal(signal.SIGTERM)
        rc = run.wait(60)
    finally:
        slow.close()
    assert rc == 0, run.stderr.decode()
    assert len(run.stdout) == 2  # the first, and the one in hand finished during the drain
    uploaded = {u.rsplit("/", 1)[1] for u in run.stdout}
    assert set(gcs_server.objects(bucket)) == {f"{PREFIX}/{n}" for n in uploaded}
    kept = sorted(str(p) for p in parts if p.exists())
    assert len(kept) == 2 and not {Path(k).name for k in kept} & uploaded
    last = json_lines(run.stderr)[-1]
    assert last["severity"] == "WARNING" and sorted(last["left"]) == kept


def test_drain_input_takes_the_last_parts_upstream_sends_after_sigterm(
    gcs_server, bucket, tmp_path
):
    parts = make_parts(tmp_path / "parts", 4)
    run = Running("-b", bucket, "--prefix", PREFIX, "--drain-input", env=env_for(gcs_server))
    run.feed(parts[:2])
    run.expect_urls(2)
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    run.feed(parts[2:])  # rotate/compress finishing their last parts, then closing the pipe
    assert run.close(30) == 0, run.stderr.decode()
    assert set(gcs_server.objects(bucket)) == {f"{PREFIX}/{p.name}" for p in parts}
    assert not any(p.exists() for p in parts)
    last = json_lines(run.stderr)[-1]
    assert last["severity"] == "NOTICE" and last["left"] == [] and last["uploaded"] == 4


def test_drain_input_ends_at_the_drain_deadline_if_input_stays_open(gcs_server, bucket, tmp_path):
    parts = make_parts(tmp_path / "parts", 1)
    run = Running(
        "-b", bucket, "--prefix", PREFIX, "--drain-input", "--drain-timeout", "1",
        env=env_for(gcs_server),
    )  # fmt: skip
    run.feed(parts)
    run.expect_urls(1)
    run.proc.send_signal(signal.SIGTERM)
    rc = run.wait(30)  # stdin is still open: only the deadline ends it
    assert rc == 0, run.stderr.decode()
    assert json_lines(run.stderr)[-1]["message"].startswith("SIGTERM: stopped; 0 file")


def test_sweep_leaves_files_still_being_written(gcs_server, bucket, tmp_path):
    parts_dir = tmp_path / "parts"
    done = make_parts(parts_dir, 2)
    busy = [parts_dir / ".part__eth0__x.pcap", parts_dir / "part__eth0__y.pcap.gz.tmp"]
    for p in busy:
        p.write_bytes(b"half")
    r = run_pcaptool(
        "upload",
        "-b",
        bucket,
        "--prefix",
        PREFIX,
        "--sweep",
        str(parts_dir),
        env=env_for(gcs_server),
    )
    assert r.returncode == 0, r.stderr.decode()
    assert set(gcs_server.objects(bucket)) == {f"{PREFIX}/{p.name}" for p in done}
    assert all(p.exists() for p in busy)


def test_watch_uploads_parts_as_they_appear(gcs_server, bucket, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    run = Running(
        "-b", bucket, "--prefix", PREFIX, "--watch", str(watched), "--glob", "*.gz", "--poll", "0.1",
        env=env_for(gcs_server),
    )  # fmt: skip
    try:
        staged = make_parts(tmp_path / "staging", 3)
        for p in staged:
            os.rename(p, watched / p.name)  # how rotate/compress publish a finished part
        (watched / "not-a-part.txt").write_bytes(b"x")
        urls = run.expect_urls(3)
    finally:
        run.proc.send_signal(signal.SIGTERM)
        rc = run.wait(30)
    assert rc == 0, run.stderr.decode()
    assert sorted(urls) == sorted(f"gs://{bucket}/{PREFIX}/{p.name}" for p in staged)
    assert [p.name for p in watched.iterdir()] == ["not-a-part.txt"]


def test_local_destination_copies_verifies_and_never_overwrites(tmp_path):
    parts = make_parts(tmp_path / "parts", 3)
    contents = {p.name: p.read_bytes() for p in parts}
    dest = tmp_path / "dest"
    target = dest / PREFIX
    target.mkdir(parents=True)
    (target / parts[0].name).write_bytes(contents[parts[0].name])  # same content: done already
    (target / parts[1].name).write_bytes(b"someone else's")  # different: refused
    r = run_pcaptool(
        "upload", "--dest", str(dest), "--prefix", PREFIX, *map(str, parts), env=env_for()
    )
    assert r.returncode == 1
    assert json_lines(r.stderr)[0]["message"] == f"PCAP files available at: {target}"
    assert sorted(r.stdout.decode().split()) == sorted(
        str(target / p.name) for p in (parts[0], parts[2])
    )
    assert (target / parts[1].name).read_bytes() == b"someone else's"
    assert [p.exists() for p in parts] == [False, True, False]
    assert (target / parts[2].name).read_bytes() == contents[parts[2].name]
    assert sorted(p.name for p in target.iterdir()) == sorted(contents)  # no temp files left


def test_no_destination_is_refused_and_nothing_is_written_under_tmp(tmp_path):
    (part,) = make_parts(tmp_path / "parts", 1)
    r = run_pcaptool("upload", "--prefix", PREFIX, str(part), env=env_for())
    assert r.returncode == 2
    err = r.stderr.decode().strip()
    assert err.startswith("pcaptool: error: no destination") and "\n" not in err
    assert "--bucket" in err and "--dest" in err and part.exists()
    assert not Path("/tmp/pcaptool/uploads", PREFIX, part.name).exists()
    help_text = run_pcaptool("upload", "--help", env=env_for()).stdout.decode()
    assert "Destination (required)" in help_text and "Example:" in help_text


def test_bucket_from_environment_wins_over_gcs_mount_from_environment(gcs_server, bucket, tmp_path):
    parts = make_parts(tmp_path / "parts", 1)
    env = env_for(gcs_server, PCAP_GCS_BUCKET=bucket, GCS_MOUNT=str(tmp_path / "mnt"))
    r = run_pcaptool("upload", "--prefix", PREFIX, str(parts[0]), env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == [f"gs://{bucket}/{PREFIX}/{parts[0].name}"]
    assert not (tmp_path / "mnt").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bucket", "b", "--dest", "/tmp"], "either --bucket or --dest"),
        (["--bucket", "pcaps", "--watch", "/nonexistent/ptup"], "not a directory"),
        (["--bucket", "gs://b/some/path"], "bucket name"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, words):
    r = run_pcaptool("upload", *args, input=b"", env=env_for())
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [r.stderr.decode().strip()]
    assert words in r.stderr.decode() and b"Traceback" not in r.stderr


# ------------------------------------------------------------------ bad destinations (root)


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "ptup", str(where)], check=True)


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False)


@needs_root
def test_read_only_destination_is_a_clear_error_and_keeps_files(tmp_path):
    parts = make_parts(tmp_path / "parts", 2)
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "ro,size=1m")
    try:
        r = run_pcaptool(
            "upload", "--dest", str(ro), "--prefix", PREFIX, *map(str, parts), env=env_for()
        )
    finally:
        _umount(ro)
    assert r.returncode == 1
    err = r.stderr.decode().strip()
    assert err.startswith("pcaptool: error: destination is read-only") and "\n" not in err
    assert all(p.exists() for p in parts)


@needs_root
def test_full_destination_is_a_clear_error_and_keeps_files(tmp_path):
    parts_dir = tmp_path / "parts"
    parts = make_parts(parts_dir, 3, size=200_000)  # only one fits in 256 KiB
    full = tmp_path / "full"
    _mount_tmpfs(full, "size=256k")
    try:
        r = run_pcaptool(
            "upload", "--dest", str(full), "--prefix", PREFIX, "--jobs", "1",
            *map(str, parts), env=env_for(),
        )  # fmt: skip
        left_in_dest = sorted(p.name for p in (full / PREFIX).iterdir())
    finally:
        _umount(full)
    assert r.returncode == 1
    errors = [rec for rec in json_lines(r.stderr) if rec["severity"] == "ERROR"]
    assert errors and all("destination is full" in rec["message"] for rec in errors)
    kept = [p for p in parts if p.exists()]
    assert len(kept) == 2 and len(r.stdout.decode().split()) == 1
    assert r.stderr.decode().splitlines()[-1].startswith("pcaptool: error: 2 file(s) not uploaded")
    # only the one complete copy: no half-written or temporary files
    assert left_in_dest == sorted({p.name for p in parts} - {p.name for p in kept})


def test_missing_credentials_is_one_line_naming_the_fix(tmp_path):
    (part,) = make_parts(tmp_path / "parts", 1)
    nowhere = closed_port_host()
    env = env_for(
        GCE_METADATA_HOST=nowhere,
        GCE_METADATA_IP=nowhere,
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        GOOGLE_APPLICATION_CREDENTIALS="",
    )
    r = run_pcaptool("upload", "-b", BUCKET, str(part), env=env)
    assert r.returncode == 1
    err = r.stderr.decode().strip()
    assert err.startswith("pcaptool: error: no Google credentials") and "--dest" in err
    assert "\n" not in err and part.exists()


def test_a_path_that_does_not_exist_is_reported_and_the_rest_uploaded(gcs_server, bucket, tmp_path):
    (part,) = make_parts(tmp_path / "parts", 1)
    ghost = tmp_path / "parts" / "part__eth0__ghost.pcap"
    r = run_pcaptool(
        "upload", "-b", bucket, "--prefix", PREFIX, input=b"%s\n%s\n" % (bytes(ghost), bytes(part)),
        env=env_for(gcs_server),
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stdout.decode().split() == [f"gs://{bucket}/{PREFIX}/{part.name}"]
    errors = [rec for rec in json_lines(r.stderr) if rec["severity"] == "ERROR"]
    assert [e["source"] for e in errors] == [str(ghost)] and "not retried" in errors[0]["message"]
    assert "no such file" in errors[0]["message"] and "stays on disk" not in errors[0]["message"]
    last = r.stderr.decode().splitlines()[-1]
    assert last.startswith("pcaptool: error: 1 path(s) not uploaded") and "no such file" in last
    assert "--sweep" not in last
