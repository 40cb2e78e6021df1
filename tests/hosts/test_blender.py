"""The Blender add-on inside a real headless Blender (`blender -b --factory-startup`).

Skipped when Blender is missing, unless PAINTBRIDGE_REQUIRE_HOSTS=1 (then it fails). Blender's Python must
have numpy for the pixel-fact checks (official builds do; on Debian: apt-get install python3-numpy).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE / "blender"))

from blender_host import SCRIPTS, describe_failure, find_blender, run_in_blender  # noqa: E402

pytestmark = pytest.mark.host


@pytest.fixture(scope="session")
def blender():
    exe = find_blender()
    if exe is None:
        if os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS") == "1":
            pytest.fail("Blender not found and PAINTBRIDGE_REQUIRE_HOSTS=1")
        pytest.skip("Blender not installed (apt-get install blender, or set PAINTBRIDGE_BLENDER)")
    return exe


@pytest.fixture(scope="session")
def addon_zip(blender, tmp_path_factory):
    from engine.plugin_build import build

    return build("blender", tmp_path_factory.mktemp("blender-addon") / "paintbridge-blender.zip")


def _run(zip_path, script, timeout=120, **kw):
    out = run_in_blender(zip_path, SCRIPTS / script, timeout, **kw)
    assert out["ok"], describe_failure(out)
    return out


def test_pixel_facts(blender):
    out = _run(None, "pixel_facts.py", 60)
    assert out["startup_s"] < 30
    assert out["result"]["ref_after_undo"] == "ReferenceError"


def test_addon_installs_and_places_results(addon_zip, tmp_path):
    out = _run(addon_zip, "addon_smoke.py", user_dir=tmp_path / "u")
    assert out["module"] == "paintbridge"
    assert out["result"]["drain_without_session"] == 0
    again = _run(addon_zip, "check_saved.py", blend_file=out["result"]["blend"], user_dir=tmp_path / "u",
                 params={"name": out["result"]["result_name"]})
    assert again["result"]["ok"]


def test_bad_addon_reports_enable_failure(blender, tmp_path):
    import zipfile

    bad = tmp_path / "broken.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("broken/__init__.py", "bl_info = {'name': 'broken', 'blender': (3, 0, 0)}\nraise ImportError('nope')\n")
    out = run_in_blender(bad, SCRIPTS / "pixel_facts.py", 60)
    assert not out["ok"] and out["stage"] == "enable" and out["returncode"] == 2, describe_failure(out)


def test_against_engine(addon_zip, engine_server, tmp_path):
    out = _run(addon_zip, "engine_roundtrip.py", timeout=480, user_dir=tmp_path / "u",
               params={"url": engine_server.url, "token": engine_server.token, "model": engine_server.model_name})
    r = out["result"]
    assert r["roundtrip"] == "exact"
    assert r["generate"]["size"] == [64, 48]
    assert r["inpaint"]["changed_outside_mask"] == 0
    # the token lives in Blender's (isolated) user config, mode 0600, unless a keyring took it
    if r["token_backend"].startswith("file"):
        f = Path(r["token_backend"][5:])
        assert f.exists() and (f.stat().st_mode & 0o777) == 0o600
