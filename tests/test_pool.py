"""The worker pool on a real local Ray cluster (CPU: Ray's logical GPUs, one per worker): one engine with
`--workers 2` for the whole module (a cluster start costs ~10-50 s and ~1 GB), plug-in clients on real sockets.

Jobs from two users land on both workers and are byte-identical to the same jobs run in process; previews come
back as job.progress; cancel reaches a running job; the workers' blob route wants a running job's token; a model
no worker can load fails clearly; kill -9 of a worker mid-job requeues the job once, and a second loss fails it
with `worker_lost`; the pool then recovers by itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .helpers import EngineProc, new_user, run_job, wait_job

if importlib.util.find_spec("ray") is None and not os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS"):
    pytest.skip("Ray is not installed (pip install 'paintbridge[ray]'); CI installs it", allow_module_level=True)

pytestmark = [pytest.mark.pool, pytest.mark.slow]

WORKERS = 2


def job_args(seed: int, steps: int = 3) -> dict:
    return {"model": "tiny-sd15", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": steps, "seed": seed}


def wait_pool(client, up: int = WORKERS, timeout: float = 300) -> dict:
    end = time.monotonic() + timeout
    while True:
        st = client.call("pool.status", {})
        if st["state"] == "up" and st["up"] >= up and not st["running"]:
            return st
        if time.monotonic() > end:
            raise AssertionError(f"the pool did not come up: {st}")
        time.sleep(0.5)


def worker_of(client, job: str, timeout: float = 120) -> dict:
    """The pool worker running `job` (once it said hello)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for w in client.call("pool.status", {})["workers"]:
            if w["job"] == job:
                return w
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not start on a worker")


def first_progress(client, job: str, timeout: float = 180):
    return client.next_event(timeout, name="job.progress", match=lambda e: e.data["job"] == job)


@pytest.fixture(scope="module")
def pool_models(tmp_path_factory):
    from engine.models.demo import make_demo

    root = tmp_path_factory.mktemp("pool-models")
    make_demo(root / "build", "sd15").rename(root / "tiny-sd15")
    shutil.copytree(root / "tiny-sd15", root / "tiny-broken")   # its UNet weights go before it is used
    return root


@pytest.fixture(scope="module")
def pool_engine(tmp_path_factory, pool_models):
    eng = EngineProc(tmp_path_factory.mktemp("pool-engine"), ["--models", str(pool_models),
                                                               "--workers", str(WORKERS)])
    eng.start()
    try:
        c = eng.client()
        wait_pool(c)
        c.close()
        yield eng
    finally:
        eng.stop()   # stops the local Ray cluster with it
        if eng.proc.returncode != 0:   # a safety net, so that no cluster outlives the tests
            subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=60)


@pytest.fixture
def admin(pool_engine):
    c = pool_engine.client()
    wait_pool(c)   # a test that killed workers leaves the pool to come back before the next
    yield c
    c.close()


def test_two_users_spread_over_both_workers_byte_identical_to_in_process(pool_engine, admin, pool_models,
                                                                           spawn_engine):
    other = new_user(pool_engine)
    jobs = {}   # job -> (client, seed)
    for seed in (11, 12):
        for client in (admin, other):
            jobs[client.call("generate", job_args(seed + (100 if client is other else 0)))["job"]] = \
                (client, seed + (100 if client is other else 0))
    infos = {job: wait_job(client, job, timeout=300) for job, (client, _) in jobs.items()}
    assert all(i["status"] == "completed" for i in infos.values()), infos
    workers = {i["worker"] for i in infos.values()}
    assert len(workers) == WORKERS and None not in workers   # both workers ran jobs, job.get says which
    status = admin.call("pool.status", {})
    assert {w["worker"] for w in status["workers"]} == workers
    assert all("tiny-sd15" in w["models"] and not w["busy"] for w in status["workers"])
    listed = {m["name"]: m for m in admin.call("models.list", {})["models"]}
    assert listed["tiny-sd15"]["loaded"] and sorted(listed["tiny-sd15"]["workers"]) == sorted(workers)

    # the same jobs in process (one of each user's): the same bytes
    plain = spawn_engine("--models", str(pool_models))
    pc = plain.client()
    assert pc.call("pool.status", {})["mode"] == "off"
    for job, (client, seed) in list(jobs.items())[:2]:
        ref = wait_job(pc, pc.call("generate", job_args(seed))["job"], timeout=300)
        assert ref["status"] == "completed" and ref["worker"] is None
        got = client.download(infos[job]["layers"][0]["sha256"])
        want = pc.download(ref["layers"][0]["sha256"])
        assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest(), f"seed {seed}"
    pc.close()
    other.close()


def test_previews_stream_back_as_job_progress(admin):
    job, _, last, evs = run_job(admin, job_args(5, steps=4))
    assert last.name == "job.result"
    progress = [e.data for e in evs if e.name == "job.progress"]
    assert [p["step"] for p in progress] == [1, 2, 3, 4] and all(p["total"] == 4 for p in progress)
    preview = progress[-1]["preview"]
    assert preview["format"] == "rgba8" and len(preview["data"]) == preview["w"] * preview["h"] * 4


def test_cancel_reaches_a_running_job(admin):
    job = admin.call("generate", job_args(21, steps=200))["job"]
    first_progress(admin, job)
    assert admin.call("job.cancel", {"job": job})["status"] == "canceling"
    admin.next_event(60, name="job.canceled", match=lambda e: e.data["job"] == job)
    info = admin.call("job.get", {"job": job})
    assert info["status"] == "canceled" and info["progress"] is None
    wait_pool(admin, timeout=60)   # the worker is free again: it stopped at its next step
    follow = wait_job(admin, admin.call("generate", job_args(22))["job"], timeout=120)
    assert follow["status"] == "completed"


def test_blob_route_needs_a_running_jobs_token(admin):
    route = admin.call("pool.status", {})["route"]
    sha = admin.upload(b"\x01" * 64)
    job = admin.call("generate", job_args(41))["job"]
    for headers in ({}, {"Authorization": "Bearer " + "0" * 64}):
        req = urllib.request.Request(f"{route}/pool/v1/jobs/{job}/blobs/{sha}", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 403
        put = urllib.request.Request(f"{route}/pool/v1/jobs/{job}/blobs", data=b"x", method="PUT", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(put, timeout=10)
        assert err.value.code == 403
    assert wait_job(admin, job)["status"] == "completed"


def test_a_model_no_worker_can_load_fails_clearly_and_the_workers_go_on(admin, pool_models):
    for f in (pool_models / "tiny-broken" / "unet").glob("*.safetensors"):
        f.unlink()
    info = wait_job(admin, admin.call("generate", {**job_args(51), "model": "tiny-broken"})["job"], timeout=120)
    assert info["status"] == "failed" and info["error"]["code"] == "bad_request"
    assert "no pool worker can load model 'tiny-broken'" in info["error"]["message"], info["error"]
    assert wait_job(admin, admin.call("generate", job_args(52))["job"], timeout=120)["status"] == "completed"


def test_kill_9_of_a_worker_mid_job_requeues_once_then_fails_worker_lost(admin):
    # one loss: the job goes back to the queue and completes on another worker
    job = admin.call("generate", job_args(31, steps=40))["job"]
    first_progress(admin, job)
    victim = worker_of(admin, job)
    os.kill(victim["pid"], signal.SIGKILL)
    admin.next_event(60, name="job.queued", match=lambda e: e.data["job"] == job)
    info = wait_job(admin, job, timeout=300)
    assert info["status"] == "completed" and info["worker"] not in (None, victim["worker"])

    # two losses: it fails with worker_lost, and is not left running
    wait_pool(admin)
    job = admin.call("generate", job_args(32, steps=200))["job"]
    first_progress(admin, job)
    first = worker_of(admin, job)
    os.kill(first["pid"], signal.SIGKILL)
    admin.next_event(60, name="job.queued", match=lambda e: e.data["job"] == job)
    first_progress(admin, job)
    second = worker_of(admin, job)
    assert second["worker"] != first["worker"]
    os.kill(second["pid"], signal.SIGKILL)
    failed = admin.next_event(60, name="job.failed", match=lambda e: e.data["job"] == job)
    assert failed.data["error"]["code"] == "worker_lost"
    assert admin.call("job.get", {"job": job})["status"] == "failed"

    # the pool replaces both workers by itself, and jobs run again
    wait_pool(admin)
    assert wait_job(admin, admin.call("generate", job_args(33))["job"], timeout=300)["status"] == "completed"
