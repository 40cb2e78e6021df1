"""setup_chroot.sh takes the Debian mirror for the trixie host chroot only from the machine's apt sources
(`--print-mirror`; apt's configuration is pointed at test files with APT_CONFIG). No root, no network."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parent / "chroot" / "setup_chroot.sh"

pytestmark = pytest.mark.skipif(shutil.which("apt-config") is None, reason="needs apt (apt-config)")


def mirror(tmp_path, sources_list: str = "", parts: dict | None = None, **env):
    (tmp_path / "parts").mkdir()
    (tmp_path / "sources.list").write_text(sources_list)
    for name, text in (parts or {}).items():
        (tmp_path / "parts" / name).write_text(text)
    (tmp_path / "apt.conf").write_text(f'Dir::Etc::sourcelist "{tmp_path}/sources.list";\n'
                                       f'Dir::Etc::sourceparts "{tmp_path}/parts";\n')
    run_env = {k: v for k, v in os.environ.items() if k != "PAINTBRIDGE_DEBIAN_MIRROR"}
    run_env.update(APT_CONFIG=str(tmp_path / "apt.conf"), **env)
    return subprocess.run(["bash", str(SETUP), "--print-mirror"], env=run_env, capture_output=True, text=True,
                          timeout=30)


def test_deb822_skips_disabled_source_and_security_stanzas(tmp_path):
    res = mirror(tmp_path, parts={
        "a-other.sources": "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n",
        "b-debian.sources": ("# a comment\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: trixie\n\n"
                             "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
                             "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
                             "Types: deb deb-src\nURIs:\n http://mirror.example/debian\n http://two.example/debian\n"
                             "Suites: bookworm bookworm-updates\nComponents: main\n"),
        "c.list.disabled": "deb http://ignored.example/debian trixie main\n"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "http://mirror.example/debian"


def test_one_line_sources_with_options(tmp_path):
    res = mirror(tmp_path, sources_list=("# deb http://commented.example/debian trixie main\n"
                                         "deb [arch=amd64] http://ppa.example/ubuntu jammy main\n"
                                         "deb http://security.debian.org/debian-security trixie-security main\n"
                                         "deb [signed-by=/k.gpg] http://one.example/debian/ trixie main # here\n"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "http://one.example/debian/"


def test_no_debian_source_fails_clearly(tmp_path):
    res = mirror(tmp_path, sources_list="deb http://ppa.example/ubuntu jammy main\n", parts={
        "sec.sources": "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: trixie-security\n"})
    assert res.returncode == 1 and res.stdout == ""
    assert "no Debian mirror in this machine's apt sources" in res.stderr and "PAINTBRIDGE_DEBIAN_MIRROR" in res.stderr


def test_an_explicit_mirror_is_used_as_given(tmp_path):
    res = mirror(tmp_path, PAINTBRIDGE_DEBIAN_MIRROR="http://local.example/debian")
    assert res.returncode == 0 and res.stdout.strip() == "http://local.example/debian"
