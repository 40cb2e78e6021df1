"""A client written in another language from SPEC.md alone (tests/spec_client/client.mjs) talks to the engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import cli

CLIENT = Path(__file__).parent / "spec_client" / "client.mjs"


def test_independent_javascript_client(spine_server):
    node = shutil.which("node")
    if node is None:
        if os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS"):
            pytest.fail("node is required for the independent-client test")
        pytest.skip("node is not installed")
    cli("users", "--data-dir", str(spine_server.data_dir), "add", "jsclient", "--password", "js-secret")
    res = subprocess.run([node, "--experimental-websocket", "--no-warnings", str(CLIENT), spine_server.url,
                          "jsclient", "js-secret"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report == {"ok": True, "user": "jsclient", "layer_mib": 40, "bad_inputs": "all answered",
                      "refreshed": report["refreshed"]}
