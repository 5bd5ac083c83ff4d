"""Captures hold secrets: what pcaptool writes is 0600 (directories 0700) whatever the umask,
and PCAP_GROUP_READABLE=true makes it 0640/0750 for a group that must read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_rotate import pcap_bytes
from test_upload import PREFIX, env_for

from conftest import pcaptool_env, run_pcaptool
from pcaptool import fsmode

MODES = {False: (0o600, 0o700), True: (0o640, 0o750)}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def env(group: bool) -> dict[str, str]:
    e = pcaptool_env()
    e.pop(fsmode.GROUP_ENV, None)
    if group:
        e[fsmode.GROUP_ENV] = "true"
    return e


@pytest.fixture(autouse=True)
def _loose_umask():
    old = os.umask(0o002)  # a umask that would leave everything world-readable
    yield
    os.umask(old)


@pytest.mark.parametrize("group", [False, True])
def test_rotate_compress_and_upload_write_private_files(tmp_path, group):
    want_file, want_dir = MODES[group]
    parts = tmp_path / "new" / "parts"
    r = run_pcaptool("rotate", "--dir", str(parts), input=pcap_bytes(50), env=env(group))
    assert r.returncode == 0, r.stderr.decode()
    (part,) = [Path(line) for line in r.stdout.decode().split()]
    assert mode(part) == want_file and mode(parts) == want_dir and mode(parts.parent) == want_dir

    part.chmod(0o644)  # whatever the input allowed, the .gz is private
    r = run_pcaptool("compress", str(part), env=env(group))
    assert r.returncode == 0, r.stderr.decode()
    (gz,) = [Path(line) for line in r.stdout.decode().split()]
    assert mode(gz) == want_file

    dest = tmp_path / "dest"
    r = run_pcaptool(
        "upload", "--dest", str(dest), "--prefix", PREFIX, str(gz), env=env_for() | env(group)
    )
    assert r.returncode == 0, r.stderr.decode()
    copy = dest / PREFIX / gz.name
    assert mode(copy) == want_file
    d = dest / PREFIX
    while d != tmp_path:  # every directory upload created, DIR itself included
        assert mode(d) == want_dir, d
        d = d.parent


def test_merge_output_is_private_and_an_existing_output_keeps_its_mode(tmp_path):
    src = tmp_path / "in.pcap"
    src.write_bytes(pcap_bytes(5))
    out = tmp_path / "merged.pcap"
    r = run_pcaptool("merge", str(src), "-o", str(out), env=env(False))
    assert r.returncode == 0, r.stderr.decode()
    assert mode(out) == 0o600
    out.chmod(0o644)  # the user's own choice for a file that exists
    r = run_pcaptool("merge", str(src), "-o", str(out), env=env(False))
    assert r.returncode == 0 and mode(out) == 0o644


def test_merge_to_dev_null_leaves_dev_null_alone(tmp_path):
    src = tmp_path / "in.pcap"
    src.write_bytes(pcap_bytes(5))
    before = mode(Path(os.devnull))
    r = run_pcaptool("merge", str(src), "-o", os.devnull, env=env(False))
    assert r.returncode == 0, r.stderr.decode()
    assert mode(Path(os.devnull)) == before


def test_make_dirs_keeps_existing_directories_and_reports_a_file_in_the_way(tmp_path):
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    fsmode.make_dirs(existing / "a" / "b")
    assert mode(existing) == 0o755
    assert mode(existing / "a") == mode(existing / "a" / "b") == 0o700
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        fsmode.make_dirs(tmp_path / "file" / "sub")
