"""Queue order: priority first, round-robin between users, FIFO within a user; events only to the owner."""

from __future__ import annotations

import json

import numpy as np

from protocol.client import Client

from .helpers import cli, copy_graph, layer_ref


def tiny_graph(sha: str, name: str) -> dict:
    return copy_graph(layer_ref(sha, 2, 2), name)


def test_priority_round_robin_and_fifo(spawn_engine, demo_models):
    eng = spawn_engine("--models", str(demo_models))
    d = str(eng.data_dir)
    cli("users", "--data-dir", d, "add", "ana", "--password", "anapw")
    cli("users", "--data-dir", d, "add", "ben", "--password", "benpw")
    admin = eng.client()
    ana = Client(eng.url, reconnect=False).connect()
    ana.login("ana", "anapw")
    ben = Client(eng.url, reconnect=False).connect()
    ben.login("ben", "benpw")
    px = np.arange(16, dtype=np.uint8).tobytes()
    sha_a, sha_b = ana.upload(px), ben.upload(px)

    # a long job keeps the worker busy while the others queue up
    blocker = admin.call("generate", {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 200})["job"]
    admin.next_event(120, name="job.progress", match=lambda e: e.data["job"] == blocker)
    jobs = {}
    for name in ("a1", "a2", "a3"):
        jobs[name] = ana.call("graph.submit", {"graph": tiny_graph(sha_a, name)})["job"]
    jobs["b1"] = ben.call("graph.submit", {"graph": tiny_graph(sha_b, "b1")})["job"]
    jobs["b2"] = ben.call("graph.submit", {"graph": tiny_graph(sha_b, "b2")})["job"]
    jobs["urgent"] = ben.call("graph.submit", {"graph": tiny_graph(sha_b, "urgent"), "priority": 5})["job"]
    admin.call("job.cancel", {"job": blocker})

    names = {v: k for k, v in jobs.items()}
    order = []
    while len(order) < len(jobs):
        ev = admin.next_event(60, name="job.started")   # admins see everyone's events
        if ev.data["job"] in names:
            order.append(names[ev.data["job"]])
    assert order[0] == "urgent"
    # then alternate between users, each in submission order (ben was just served: ana goes first)
    assert order[1:] == ["a1", "b1", "a2", "b2", "a3"], order

    # every user saw results of their own jobs only
    ana_jobs = {e.data["job"] for e in ana.drain(1000) if e.name.startswith("job.")}
    ben_jobs = {e.data["job"] for e in ben.drain(1000) if e.name.startswith("job.")}
    assert ana_jobs == {jobs[k] for k in ("a1", "a2", "a3")}
    assert ben_jobs == {jobs[k] for k in ("b1", "b2", "urgent")}
    for c in (admin, ana, ben):
        c.close()


def _queued(db, user: int, model: str) -> str:
    graph = {"nodes": {"m": {"type": "load_model", "model": model}}, "edges": []}
    seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
    job = f"j{seq}"
    db["jobs"].insert({"id": job, "seq": seq, "user_id": user, "status": "queued", "priority": 0, "kind": "generate",
                       "request": "{}", "graph": json.dumps(graph), "created": 0.0})
    return job


def test_a_warm_model_goes_first_only_within_one_users_turn(tmp_path):
    """A pool (engine/pool/) names the models its free workers hold: within the user's turn, their oldest job for
    such a model runs first; the turn itself (round-robin between users) and other users' order do not change."""
    from engine.queue import _claim_next
    from engine.store.db import connect

    db = connect(tmp_path / "q.db")
    a_cold, a_warm, b_cold = _queued(db, 1, "cold"), _queued(db, 1, "warm"), _queued(db, 2, "cold")
    served = {1: 0.0, 2: 1.0}   # user 1 was served longest ago: their turn
    assert _claim_next(db, served)["id"] == a_cold                       # no pool: FIFO
    db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", [a_cold])
    assert _claim_next(db, served, frozenset({"warm"}))["id"] == a_warm  # warm first, within user 1's turn
    served = {1: 2.0, 2: 1.0}   # now user 2's turn: their cold job, although user 1 has a warm one waiting
    db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", [a_warm])
    assert _claim_next(db, served, frozenset({"warm"}))["id"] == b_cold
