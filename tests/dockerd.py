"""A Docker daemon and the pcaptool image for the smoke tests, built with no image registry.

- ``docker_host`` (session): a running dockerd to talk to. Reuses one that answers
  (``$DOCKER_HOST``, ``/var/run/docker.sock``, or ours from an earlier session), else starts
  ``dockerd`` by hand with its own data root, exec root, pidfile and socket under the cache
  directory (``$PCAPTOOL_TEST_CACHE``, default ``/var/cache/pcaptool-test``), no bridge
  and no iptables rules (builds and containers use the host network), and stops it after.
- ``base_image`` (session): ``pcaptool-base:bookworm`` from ``scripts/make-base-image.sh``
  (debootstrap --variant=minbase from the Debian mirror + ``docker import``; the rootfs
  tarball is cached, so only the first run pays for debootstrap).
- ``pcaptool_image`` (session): the repository's Dockerfile built with
  ``--build-arg BASE=pcaptool-base:bookworm`` from a clean copy of the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PCAPTOOL_TEST_CACHE", "/var/cache/pcaptool-test"))
BASE_TAG = "pcaptool-base:bookworm"
IMAGE_TAG = "pcaptool:ptsc-test"


def docker(host: str, *args: str, timeout: float = 120, check: bool = True, **kw):
    env = dict(os.environ, DOCKER_HOST=host, DOCKER_BUILDKIT="0")
    r = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr[-3000:]}")
    return r


def _answers(host: str) -> bool:
    try:
        return (
            docker(
                host, "version", "--format", "{{.Server.Version}}", timeout=10, check=False
            ).returncode
            == 0
        )
    except (subprocess.TimeoutExpired, OSError):
        return False


@pytest.fixture(scope="session")
def docker_host():
    if os.geteuid() != 0:
        pytest.skip("the Docker smoke test needs root (dockerd)")
    for tool in ("docker", "dockerd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-deps.sh installs docker.io)")
    own = f"unix://{CACHE}/run/docker.sock"
    for host in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock", own):
        if host and _answers(host):
            yield host
            return

    run = CACHE / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "docker.sock").unlink(missing_ok=True)
    log = open(run / "dockerd.log", "ab")  # noqa: SIM115 (kept open for the daemon's life)
    proc = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(CACHE / "docker"),
            "--exec-root",
            str(run / "exec"),
            "--pidfile",
            str(run / "dockerd.pid"),
            "--host",
            own,
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ],  # fmt: skip
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not _answers(own):
            if proc.poll() is not None:
                tail = (run / "dockerd.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"dockerd exited ({proc.returncode}): {tail}")
            if time.monotonic() > deadline:
                pytest.fail("dockerd did not answer within 90 s")
            time.sleep(0.5)
        yield own
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def base_image(docker_host):
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (scripts/install-deps.sh installs it)")
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "make-base-image.sh"), BASE_TAG, str(CACHE)],
        capture_output=True,
        text=True,
        timeout=1200,
        env=dict(os.environ, DOCKER_HOST=docker_host),
    )
    assert r.returncode == 0, r.stderr
    return BASE_TAG


def build_context(dest: Path) -> Path:
    """A clean copy of the checkout (tracked and new files, nothing ignored) to build from."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, files):
        src = REPO / rel.decode()
        if src.is_file():
            target = dest / rel.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    # A TLS-intercepting proxy in front of PyPI (as on this CI) is trusted by the build
    # stage through docker/extra-ca-certificates; the host's bundle carries its CA.
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_bundle.is_file():
        shutil.copy(host_bundle, dest / "docker" / "extra-ca-certificates" / "host-bundle.crt")
    return dest


@pytest.fixture(scope="session")
def pcaptool_image(docker_host, base_image, tmp_path_factory):
    ctx = build_context(tmp_path_factory.mktemp("docker-context"))
    r = docker(
        docker_host,
        "build", "--network", "host", "--build-arg", f"BASE={base_image}",
        "-t", IMAGE_TAG, str(ctx),
        timeout=1800,
    )  # fmt: skip
    assert "Successfully tagged" in r.stdout or r.returncode == 0
    return IMAGE_TAG


def image_size(host: str, tag: str) -> int:
    return int(docker(host, "image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def files_in_image(host: str, tag: str, tmp: Path) -> list[str]:
    """Every path in the image's filesystem (via docker export of a created container)."""
    cid = docker(host, "create", tag).stdout.strip()
    try:
        out = tmp / "fs.tar"
        docker(host, "export", "-o", str(out), cid, timeout=300)
        with tarfile.open(out) as tar:
            return tar.getnames()
    finally:
        docker(host, "rm", "-f", cid, check=False)
