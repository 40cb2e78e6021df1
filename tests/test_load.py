"""Load: 50 concurrent connections (5 users x 10) each submitting 10 tiny jobs at once. No result is lost, every
job event reaches only its owner's connections, and every result holds the right pixels."""

from __future__ import annotations

import asyncio
import hashlib
import time

from websockets.asyncio.client import connect

from protocol import codec

from .helpers import cli, copy_graph

USERS = 5
CONNS_PER_USER = 10
JOBS_PER_CONN = 10


class Conn:
    def __init__(self, ws, user):
        self.ws, self.user = ws, user
        self.next_id = 1
        self.pending: dict[int, asyncio.Future] = {}
        self.events: list[dict] = []
        self.results: dict[str, list] = {}
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        async for frame in self.ws:
            msg = codec.decode(frame)
            if "event" in msg:
                self.events.append(msg)
                if msg["event"] == "job.result":
                    self.results[msg["data"]["job"]] = msg["data"]["layers"]
            else:
                self.pending.pop(msg["re"]).set_result(msg)

    async def call(self, op, args=None):
        rid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.ws.send(codec.encode(codec.request(rid, op, args or {})))
        reply = await asyncio.wait_for(fut, 120)
        assert reply["ok"], reply
        return reply["result"]


async def scenario(url, tokens):
    conns: list[Conn] = []
    for user, token in tokens.items():   # phase 1: everybody signed in before anybody submits
        for _ in range(CONNS_PER_USER):
            ws = await connect(url, compression=None, max_size=None)
            c = Conn(ws, user)
            await c.call("hello", {"protocol": 1, "token": token, "client": {"app": "load", "version": "0"}})
            conns.append(c)

    async def work(i, c):
        data = bytes((i * 7 + k) % 256 for k in range(8 * 8 * 4))   # a distinct 8x8 layer per connection
        put = await c.call("blob.put", {"data": data})
        layer = {"sha256": put["sha256"], "w": 8, "h": 8, "format": "rgba8"}
        jobs = await asyncio.gather(*[c.call("graph.submit", {"graph": copy_graph(layer)})
                                      for _ in range(JOBS_PER_CONN)])
        return [j["job"] for j in jobs], data

    t0 = time.monotonic()
    submitted = await asyncio.gather(*[work(i, c) for i, c in enumerate(conns)])
    jobs_of_user: dict[str, set] = {u: set() for u in tokens}
    for c, (jobs, _) in zip(conns, submitted):
        jobs_of_user[c.user].update(jobs)
    all_jobs = set().union(*jobs_of_user.values())
    assert len(all_jobs) == USERS * CONNS_PER_USER * JOBS_PER_CONN

    end = time.monotonic() + 180
    while time.monotonic() < end:   # every connection sees the result of every job of its user
        if all(jobs_of_user[c.user] <= set(c.results) for c in conns):
            break
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - t0
    for c in conns:
        assert jobs_of_user[c.user] <= set(c.results), f"{c.user}: results lost"
        for ev in c.events:   # ... and of no other user's job
            job = ev["data"].get("job")
            if job is not None:
                assert job in jobs_of_user[c.user], (c.user, ev["event"], job)
        failed = [ev for ev in c.events if ev["event"] in ("job.failed", "job.canceled")]
        assert not failed, failed[:3]
    # results are right and readable by their owner (a copy graph returns the input pixels)
    for c, (jobs, data) in zip(conns, submitted):
        sha = hashlib.sha256(data).hexdigest()
        for job in jobs:
            assert [lay["sha256"] for lay in c.results[job]] == [sha]
        info = await c.call("job.get", {"job": jobs[-1]})
        assert info["status"] == "completed"
        got = await c.call("blob.get", {"sha256": sha})
        assert got["data"] == data
    for c in conns:
        await c.ws.close()
        c.reader.cancel()
    return elapsed


def test_fifty_connections_ten_jobs_each(spawn_engine):
    eng = spawn_engine("--quiet")
    d = str(eng.data_dir)
    tokens = {}
    for i in range(USERS):
        cli("users", "--data-dir", d, "add", f"load{i}", "--password", "loadpw")
        tokens[f"load{i}"] = cli("token", "--data-dir", d, "--user", f"load{i}").split()[-1]
    asyncio.run(scenario(eng.url, tokens))   # speed is bench B4's business; a hang is pytest-timeout's
    assert eng.proc.poll() is None
