"""README "Many GPUs", two machines, on this one: `paintbridge worker --head` starts a Ray cluster's head node,
`paintbridge worker --address` joins a second node to it (as machine B would), and `paintbridge serve
--ray-address` puts the engine's workers on both. Jobs from two apps are spread over both nodes' workers.

It runs after tests/test_pool.py (its module cluster is gone by then) and ends with `paintbridge worker --stop`,
which is `ray stop`: every Ray node on this machine.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from .helpers import EngineProc, cli_run, new_user, wait_job

if importlib.util.find_spec("ray") is None and not os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS"):
    pytest.skip("Ray is not installed (pip install 'paintbridge[ray]'); CI installs it", allow_module_level=True)

pytestmark = [pytest.mark.pool, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}   # as a fresh shell has it
    token = Path.home() / ".ray" / "auth_token"
    if token.is_file():   # as Ray writes it (an earlier cluster's; `ray start --head` reuses it)
        token.chmod(0o644)
    try:
        head = cli_run("worker", "--head", "--port", str(port), "--gpus", "1", env=env)
        assert head.returncode == 0, head.stdout + head.stderr
        # the cluster's key: Ray writes it 0644; `paintbridge worker` leaves it readable by its owner only
        assert token.is_file() and stat.S_IMODE(token.stat().st_mode) == 0o600
        joined = cli_run("worker", "--address", f"127.0.0.1:{port}", "--gpus", "1", env=env)
        assert joined.returncode == 0, joined.stdout + joined.stderr
        yield f"127.0.0.1:{port}"
    finally:
        cli_run("worker", "--stop", env=env)


def test_the_readme_two_machine_commands_spread_jobs_over_both_nodes(two_nodes, tmp_path, demo_models):
    eng = EngineProc(tmp_path / "engine", ["--models", str(demo_models), "--ray-address", two_nodes])
    eng.start()
    try:
        admin = eng.client()
        end = time.monotonic() + 300
        while (st := admin.call("pool.status", {}))["up"] < 2:   # one worker per GPU of the cluster: 2
            assert time.monotonic() < end, st
            time.sleep(0.5)
        assert st["mode"] == "cluster" and st["wanted"] == 2
        krita, blender = new_user(eng, app="krita"), new_user(eng, app="blender")
        args = {"model": "tiny-sd15", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}
        jobs = [(c, c.call("generate", {**args, "seed": 7 + i})["job"]) for i in range(3) for c in (krita, blender)]
        workers = set()
        for c, job in jobs:
            assert wait_job(c, job, timeout=300)["status"] == "completed"
            workers.add(c.call("job.get", {"job": job})["worker"])
        nodes = {w["worker"]: w for w in admin.call("pool.status", {})["workers"]}
        assert workers == set(nodes) and len(workers) == 2, (workers, nodes)
        assert all(w["jobs"] >= 1 and "tiny-sd15" in w["models"] for w in nodes.values())
    finally:
        eng.stop()
