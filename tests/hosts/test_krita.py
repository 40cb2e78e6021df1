"""The Krita plug-in inside real Krita (under Xvfb), against a real engine with a tiny model."""

from __future__ import annotations

import os
from hashlib import sha256
from pathlib import Path

import pytest

from engine.plugin_build import build

from .krita.krita_host import find_krita, run_in_krita
from .krita.scripts.pattern import pattern_bgra, pattern_rgba

pytestmark = pytest.mark.host
SCRIPTS = Path(__file__).parent / "krita" / "scripts"


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    if find_krita() is None:
        if os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS") == "1":
            pytest.fail("krita and xvfb-run are required (PAINTBRIDGE_REQUIRE_HOSTS is set)")
        pytest.skip("krita or xvfb-run not installed (apt-get install krita python3-pyqt5 xvfb xauth)")
    return build("krita", tmp_path_factory.mktemp("krita") / "paintbridge-krita.zip")


def test_krita_pixel_facts(plugin_zip):
    """What the plug-in relies on (BGRA, selection masks, positioned layers in a group, the docker), no engine."""
    res = run_in_krita(plugin_zip, SCRIPTS / "pixel_facts.py", timeout=180)
    assert res["ok"], res.get("error", "") + "\n" + res.get("log", "")
    assert res["roundtrip"] and res["is_bgra"]
    assert res["selection_bounds"] == [8, 6, 20, 10] and res["selection_values"] == [0, 255]
    assert res["selection_inside"] == 255 and res["selection_outside"] == 0
    assert res["layer_bounds"] == [30, 20, 5, 4] and res["layer_parent"] == "Paintbridge"
    assert res["composite_at_offset"] == [0, 255, 0, 255]
    assert res["moved_bounds"] == [50, 40, 2, 2]
    assert res["paintbridge_docker"] and res["paintbridge_docker_visible"]


def test_inpaint_and_pixel_exact_roundtrip_in_krita(plugin_zip, engine_server):
    import time

    from ..conftest import cli

    d = str(engine_server.data_dir)
    cli("users", "--data-dir", d, "add", "kira", "--password", "kira-pw")
    expired = cli("token", "--data-dir", d, "--user", "kira", "--ttl", "1").split()[-1]
    time.sleep(1.1)
    res = run_in_krita(plugin_zip, SCRIPTS / "inpaint_roundtrip.py", timeout=400,
                       params={"url": engine_server.url, "token": engine_server.token,
                               "model": engine_server.model_name, "expired_token": expired,
                               "username": "kira", "password": "kira-pw"})
    assert res["ok"], res.get("error", "") + "\n" + res.get("log", "")
    assert res["roundtrip_exact"] is True
    assert res["layer_bounds"] == [40, 32, 48, 40]
    assert res["outside_changed"] == 0 and res["inside_changed"] > 0
    assert res["expired_prompt_kept"] is True
    assert res["after_signin_result"] == [64, 64]
    assert res["replace_exact"] is True and res["discarded"] is True
    if res["token_backend"].startswith("file"):
        assert res["token_file_mode"] == "0o600"
    # The right way round: what reached the engine is the pattern in RGBA (red block top-left), not BGRA.
    rgba, bgra = pattern_rgba(128, 128), pattern_bgra(128, 128)
    with engine_server.client() as c:
        missing = c.call("blob.has", {"hashes": [sha256(rgba).hexdigest(), sha256(bgra).hexdigest()]})["missing"]
    assert missing == [sha256(bgra).hexdigest()], "the engine did not get the pattern as RGBA"
