"""The README's two quick-start commands, taken from README.md as written.

The first runs exactly as a newcomer would: as root, in a clean copy of the checkout, in a
fresh container from the debootstrap Debian 12 base image (no /opt/pcaptool, no Python,
no pip cache), and parts must appear. The second is what CI runs (`.ci/run` execs it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from dockerd import REPO, base_image, build_context, docker, docker_host

__all__ = ["base_image", "docker_host"]  # fixtures used by name

HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quick start") :]
    section = section[: section.index("\n## ", 3)]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_has_the_two_quick_start_commands_and_ci_runs_the_second() -> None:
    first, second = quick_start_commands()
    assert first.count("\n") == 0, "the first command is one line to paste"
    assert "/opt/pcaptool/bin/pip install ." in first
    # the pipeline must not start before the install chain has succeeded: `&` binds looser
    # than `&&`, so the backgrounded part has to sit inside a group after the last `&&`
    install, _, rest = first.partition(" && { ")
    assert "&" not in install.replace("&&", ""), "the install chain is put in the background"
    assert rest.rstrip().endswith("; }; find /tmp/pcap -type f")
    assert second == "bash scripts/test.sh"
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_first_command_is_valid_bash() -> None:
    first = quick_start_commands()[0]
    r = subprocess.run(["bash", "-n", "-c", first], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_first_command_works_in_a_fresh_debian_container(docker_host, base_image, tmp_path):
    first = quick_start_commands()[0]
    src = build_context(tmp_path / "clone")
    args = ["run", "--rm", "--network", "host", "--cap-add", "NET_RAW", "--cap-add", "NET_ADMIN"]
    args += ["-v", f"{src}:/src", "-w", "/src", "-e", "DEBIAN_FRONTEND=noninteractive"]
    if HOST_BUNDLE.is_file():
        # A TLS-intercepting proxy in front of PyPI (as on this CI) is trusted through the
        # host's bundle; on a machine without one the bundle is just the usual CAs.
        args += ["-v", f"{HOST_BUNDLE}:/etc/ssl/host-bundle.crt:ro"]
        args += ["-e", "PIP_CERT=/etc/ssl/host-bundle.crt"]
    r = docker(
        docker_host, *args, base_image, "bash", "-c", first, timeout=800, check=False
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert "No module named" not in out, out[-3000:]
    parts = [Path(line) for line in r.stdout.splitlines() if line.startswith("/tmp/pcap/")]
    names = [p.name for p in parts]
    assert any(n.endswith(".pcap.gz") for n in names), out[-3000:]
    assert any(n.endswith(".json.gz") for n in names), out[-3000:]
    assert all(n.startswith("part__") for n in names), names
