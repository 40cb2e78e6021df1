"""The benchmarks B1–B8. Each takes the run context and returns a Result (tables, target checks, notes).

Nothing here asserts on speed: a missed target is reported as MISS in RESULTS.md, never raised.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .common import Daemon, median, mutate, painting, proc_status, reset_peak_rss, spread

MS = 1e3


@dataclass
class Check:
    id: str
    what: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool = False

    @property
    def passed(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    @property
    def ratio(self) -> float:
        """measured / target, oriented so that <= 1 means PASS."""
        if self.higher_is_better:
            return self.target / self.measured if self.measured else float("inf")
        return self.measured / self.target if self.target else float("inf")


@dataclass
class Result:
    id: str
    title: str
    setup: str = ""
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    raw: dict = field(default_factory=dict)


def ms(x: float) -> str:
    return f"{x * MS:.1f}"


# ---- B1 + B2: layer transport ----------------------------------------------------------------------------------
def b1_b2_transport(ctx) -> list[Result]:
    from protocol import CHUNK_SIZE

    from .baselines import HttpBaselines, WsFloor

    w, h = ctx.layer_size
    reps = ctx.reps
    rgba = painting(w, h, seed=1)
    raw = rgba.tobytes()
    nbytes = len(raw)
    level = 4   # ComfyUI's SaveImage level; PIL's default (6) is slower still
    base = bytearray(raw)

    c = ctx.daemon.client()
    http = HttpBaselines(ctx.baselines_url)
    floor = WsFloor(ctx.baselines_url, CHUNK_SIZE)
    r1 = Result("B1", "Layer transport (round trip: client → engine → client)",
                setup=f"{w}×{h} RGBA ({nbytes / 2**20:.1f} MiB raw), {reps} timed runs after 1 warm-up, medians; "
                      f"PNG at compress_level={level}; every daemon/floor run sends new bytes (a few pixels changed)")
    r2 = Result("B2", "Unchanged layer: blob.has instead of sending it")
    try:
        d_up, d_down, d_tot = [], [], []
        f_tot, comfy, a1111, d_write = [], [], [], []
        last_sha = None
        for i in range(reps + 1):     # i == 0 is the warm-up; the four paths interleave to share any drift
            payload = bytes(mutate(base, 1000 + i))
            t0 = time.perf_counter()
            sha = c.upload(payload)
            t1 = time.perf_counter()
            back = c.download(sha)
            t2 = time.perf_counter()
            assert len(back) == nbytes
            last_sha, last_payload = sha, payload
            payload2 = bytes(mutate(base, 5000 + i))
            t3 = time.perf_counter()
            back2 = floor.roundtrip(payload2, f"k{i}")
            t4 = time.perf_counter()
            assert len(back2) == nbytes
            d_write.append(_write_new_file(ctx.daemon.data_dir / f"bench-write-{i}", payload2))
            cm = http.comfy_roundtrip(rgba, level, f"layer{i}.png")
            a1 = http.a1111_roundtrip(rgba, level)
            if i == 0:
                d_write.clear()
                continue
            d_up.append(t1 - t0)
            d_down.append(t2 - t1)
            d_tot.append(t2 - t0)
            f_tot.append(t4 - t3)
            comfy.append(cm)
            a1111.append(a1)
        png_size = comfy[0]["png_bytes"]
        dm, fm = median(d_tot), median(f_tot)
        cmm = median([x["total"] for x in comfy])
        a1m = median([x["total"] for x in a1111])
        rows = [
            ["Paintbridge daemon (blob.has + chunked blob.put, blob.get; protocol.client)", ms(dm), spread(d_tot),
             f"up {ms(median(d_up))} / down {ms(median(d_down))}", f"{nbytes / 2**20:.1f} MiB", f"{2 * nbytes / dm / 2**20:.0f}"],
            ["(c) raw msgpack over bare WebSocket, in-memory echo (floor)", ms(fm), spread(f_tot), "",
             f"{nbytes / 2**20:.1f} MiB", f"{2 * nbytes / fm / 2**20:.0f}"],
            ["(d) no network: the same bytes written to a new file in the engine's data folder, fsync (what "
             "persisting an upload costs on this disk)", ms(median(d_write)), spread(d_write), "", "", ""],
            ["(a) PNG + multipart POST / GET (ComfyUI style)", ms(cmm), spread([x["total"] for x in comfy]),
             "encode {} / transfer {} / decode {}".format(*(ms(median([x[k] for x in comfy]))
                                                          for k in ("encode", "transfer", "decode"))),
             f"{png_size / 2**20:.1f} MiB PNG", ""],
            ["(b) base64 PNG inside JSON both ways (A1111 style)", ms(a1m), spread([x["total"] for x in a1111]),
             "encode+b64 {} / transfer {} / decode {}".format(*(ms(median([x[k] for x in a1111]))
                                                               for k in ("encode", "transfer", "decode"))),
             f"{png_size * 4 / 3 / 2**20:.1f} MiB b64", ""],
        ]
        r1.tables.append((["path", "median ms", "min–max ms", "phases (median ms)", "payload", "MiB/s (2× raw)"], rows))
        r1.checks.append(Check("B1", "daemon round trip vs raw WebSocket floor (c)", dm / fm, 1.5, "×"))
        r1.checks.append(Check("B1", "PNG multipart (a) / daemon round trip: daemon at least 15× faster", cmm / dm,
                               15.0, "×", higher_is_better=True))
        r1.notes.append(f"(b) base64 JSON / daemon: {a1m / dm:.1f}×. PNG compresses this layer to "
                        f"{png_size / nbytes * 100:.0f} % of raw. The daemon's time includes the client's SHA-256 "
                        "of the layer (see B2) and the engine's hashing, fsync and SQLite bookkeeping; the floor "
                        "does none of that.")
        r1.raw = {"daemon_s": d_tot, "daemon_up_s": d_up, "daemon_down_s": d_down, "floor_s": f_tot,
                  "comfy": comfy, "a1111": a1111, "bytes": nbytes, "png_bytes": png_size, "write_new_file_s": d_write}

        for f in ctx.daemon.data_dir.glob("bench-write-*"):
            f.unlink()

        # ---- B2 ----
        has = []
        for _ in range(ctx.has_reps + 5):
            t0 = time.perf_counter()
            missing = c.call("blob.has", {"hashes": [last_sha]})["missing"]
            has.append(time.perf_counter() - t0)
            assert not missing
        has = has[5:]
        hashing = []
        for _ in range(max(3, reps)):
            t0 = time.perf_counter()
            hashlib.sha256(last_payload).hexdigest()
            hashing.append(time.perf_counter() - t0)
        upload_full = []      # what the client does when it re-checks: hash + blob.has (c.upload of held bytes)
        for _ in range(max(3, reps)):
            t0 = time.perf_counter()
            c.upload(last_payload)
            upload_full.append(time.perf_counter() - t0)
        send = median(d_up)
        hm, hh, uf = median(has), median(hashing), median(upload_full)
        r2.setup = (f"same {w}×{h} layer, held by the engine; blob.has median of {len(has)}, hashing median of "
                    f"{len(hashing)}; 'send' = B1's median upload of new bytes")
        r2.tables.append((["what", "median ms", "min–max ms", "vs sending it"], [
            ["blob.has (engine holds the layer)", f"{hm * MS:.2f}", spread(has), f"{hm / send * 100:.2f} %"],
            ["client SHA-256 of the layer (hashlib)", f"{hh * MS:.1f}", spread(hashing), f"{hh / send * 100:.1f} %"],
            ["client.upload() of held bytes (hash + blob.has)", f"{uf * MS:.1f}", spread(upload_full),
             f"{uf / send * 100:.1f} %"],
            ["sending it (chunked blob.put, new bytes)", ms(send), spread(d_up), "100 %"],
        ]))
        r2.checks.append(Check("B2", "blob.has / sending the layer", hm / send * 100, 1.0, "%"))
        r2.notes.append(f"Honest total for a client that has to hash first: hash + blob.has = "
                        f"{(hh + hm) / send * 100:.1f} % of sending. Plug-ins can cache the hash of an unchanged layer "
                        "(or hash while the user paints) to get the blob.has figure.")
        r2.raw = {"has_s": has, "hash_s": hashing, "upload_held_s": upload_full, "send_s": send}
    finally:
        c.close()
        http.close()
        floor.close()
    return [r1, r2]


# ---- B3 + B6: engine overhead over bare diffusers, previews ------------------------------------------------------
def _job_timeline(c, job: str, timeout: float = 600.0) -> tuple[dict, dict]:
    """Read this client's events until job.result for `job`; arrival times of each kind (first/last)."""
    from protocol.errors import ProtocolError

    seen: dict[str, list[float]] = {}
    end = time.monotonic() + timeout
    while True:
        ev = c.next_event(timeout=max(0.0, end - time.monotonic()))
        now = time.perf_counter()
        if ev.data.get("job") != job:
            continue
        seen.setdefault(ev.name, []).append(now)
        if ev.name == "job.result":
            return seen, ev.data
        if ev.name in ("job.failed", "job.canceled"):
            raise ProtocolError("internal", f"{ev.name}: {ev.data.get('error')}")


def b3_b6_engine(ctx) -> list[Result]:
    import torch

    from engine import diffusion
    from engine.models.loader import load_model

    steps = ctx.steps
    r3 = Result("B3", "Engine overhead: a txt2img job through the daemon vs the same diffusers pipeline in-process")
    r6 = Result("B6", "Live previews: cost per step")
    r3.setup = (f"tiny random-weight SD1.5 demo model, {steps} steps, guidance 7, euler, {ctx.reps} timed runs per size "
                f"after 1 warm-up, daemon and direct runs interleaved; daemon: from the `generate` call to the "
                f"job.result event + blob.get of the result (connection excluded); direct: "
                f"`pipe(prompt, num_inference_steps={steps}, width, height, output_type='np')` in this process")
    model = load_model(ctx.model_path, name="tiny-sd15")
    model.pipe.set_progress_bar_config(disable=True)
    c = ctx.daemon.client()
    rows, per_size = [], {}
    try:
        for size in ctx.gen_sizes:
            d, direct, phases = [], [], []
            for i in range(ctx.reps + 1):
                seed = 100 + i
                t0 = time.perf_counter()
                job = c.call("generate", {"mode": "txt2img", "model": "tiny-sd15", "prompt": "a red fox",
                                          "width": size, "height": size, "steps": steps, "guidance": 7.0,
                                          "seed": seed})["job"]
                t_sub = time.perf_counter()
                seen, data = _job_timeline(c, job)
                t_res = time.perf_counter()
                px = c.download(data["layers"][0]["sha256"])
                t1 = time.perf_counter()
                assert len(px) == size * size * 4
                g = torch.Generator("cpu").manual_seed(seed)
                t2 = time.perf_counter()
                out = model.pipe(prompt="a red fox", num_inference_steps=steps, width=size, height=size,
                                 guidance_scale=7.0, generator=g, output_type="np")
                t3 = time.perf_counter()
                assert out.images[0].shape[:2] == (size, size)
                if i == 0:
                    continue
                d.append(t1 - t0)
                direct.append(t3 - t2)
                prog = seen.get("job.progress", [])
                phases.append({
                    "submit": t_sub - t0,
                    "to_started": seen.get("job.started", [t_sub])[0] - t0,
                    "started_to_first_step": (prog[0] - seen["job.started"][0]) if prog and "job.started" in seen else float("nan"),
                    "steps": (prog[-1] - prog[0]) if len(prog) > 1 else float("nan"),
                    "last_step_to_result": (t_res - prog[-1]) if prog else float("nan"),
                    "download": t1 - t_res,
                    "previews": len(prog),
                })
            dm, xm = median(d), median(direct)
            budget = xm * 1.05 + 0.030
            per_size[size] = {"daemon_s": d, "direct_s": direct, "phases": phases}
            rows.append([f"{size}×{size}", ms(dm), spread(d), ms(xm), spread(direct), f"{(dm - xm) * MS:+.1f}",
                         f"{(dm / xm - 1) * 100:+.1f} %", ms(budget)])
            r3.checks.append(Check("B3", f"{size}×{size}, {steps} steps: daemon time vs direct×1.05 + 30 ms",
                                   dm, budget, "s"))
            ph = {k: median([p[k] for p in phases]) for k in phases[0]}
            r3.notes.append(
                f"{size}×{size} daemon timeline (medians, ms): generate reply {ph['submit'] * MS:.1f}, job.started at "
                f"{ph['to_started'] * MS:.1f}, started→first step {ph['started_to_first_step'] * MS:.1f}, "
                f"first→last step {ph['steps'] * MS:.1f} ({int(ph['previews'])} progress events), "
                f"last step→job.result {ph['last_step_to_result'] * MS:.1f}, blob.get {ph['download'] * MS:.1f}.")
        r3.tables.insert(0, (["size", "daemon median ms", "min–max", "direct median ms", "min–max",
                              "overhead ms", "overhead %", "budget ms (5 % + 30 ms)"], rows))
        r3.raw = per_size

        # ---- B6: previews on 64×64 latents (512 px images) ----
        from protocol import codec

        lat = torch.randn(1, 4, 64, 64, generator=torch.Generator("cpu").manual_seed(0))
        for _ in range(5):
            diffusion.preview(model, lat)
        pv, full = [], []
        for _ in range(ctx.preview_reps):
            t0 = time.perf_counter()
            rgb = diffusion.preview(model, lat)
            t1 = time.perf_counter()
            hh, ww = rgb.shape[:2]
            rgba = np.concatenate([rgb, np.full((hh, ww, 1), 255, np.uint8)], axis=2)
            frame = codec.encode(codec.event("job.progress", {"job": "0" * 16, "step": 1, "total": 20, "node": "d",
                                                               "preview": {"w": ww, "h": hh, "format": "rgba8", "x": 0,
                                                                           "y": 0, "data": rgba.tobytes()}}))
            t2 = time.perf_counter()
            pv.append(t1 - t0)
            full.append(t2 - t0)
        r6.setup = (f"engine.diffusion.preview(model, latents) on (1, 4, 64, 64) float32 latents (a 512×512 image), "
                    f"median of {len(pv)}; 'with event' adds the RGBA expansion and msgpack encoding done per step "
                    f"(JobContext.progress)")
        r6.tables.append((["what", "median ms", "min–max ms", "output"], [
            ["preview()", f"{median(pv) * MS:.3f}", spread(pv), f"{ww}×{hh} RGB"],
            ["preview() + RGBA + msgpack event", f"{median(full) * MS:.3f}", spread(full), f"{len(frame)} B frame"],
        ]))
        r6.checks.append(Check("B6", "preview per step at 64×64 latents (with event encoding)", median(full) * MS,
                               2.0, "ms"))
        r6.raw = {"preview_s": pv, "with_event_s": full}
    finally:
        c.close()
    return [r3, r6]


# ---- B4: queue throughput -------------------------------------------------------------------------------------
def b4_queue(ctx) -> list[Result]:
    from protocol.client import Client

    nclients, njobs = ctx.clients, ctx.jobs_per_client
    r4 = Result("B4", "Queue throughput: minimal jobs end to end with events")
    r4.setup = (f"{nclients} clients (one user each, own connection) × {njobs} `graph.submit` jobs "
                f"(image_input 8×8 → output), submitted pipelined, each client waits for its job.result events; "
                f"{ctx.queue_rounds} rounds after 1 warm-up round, median")
    admin = ctx.daemon.client()
    layer_px = painting(8, 8, seed=3).tobytes()
    clients: list[Client] = []
    try:
        stamp = int(time.time() * 1000) % 10**9
        for k in range(nclients):
            name = f"bench{stamp}u{k}"
            admin.call("users.create", {"name": name, "password": "bench-password-123", "admin": False})
            cl = Client(ctx.daemon.url, None, app="bench", reconnect=False).connect()
            cl.login(name, "bench-password-123")
            clients.append(cl)
        sha = None
        for cl in clients:
            sha = cl.upload(layer_px)
        graph = {"nodes": {"i": {"type": "image_input", "layer": {"sha256": sha, "w": 8, "h": 8, "format": "rgba8",
                                                                   "x": 0, "y": 0}},
                           "o": {"type": "output", "name": "bench"}},
                 "edges": [{"from": ["i", "image"], "to": ["o", "image"]}]}

        def one_round(n_each: int) -> dict:
            barrier = threading.Barrier(len(clients) + 1)
            stats: list[dict] = [{} for _ in clients]

            def worker(k: int, cl: Client):
                barrier.wait()
                t0 = time.perf_counter()
                futs = [(time.perf_counter(), cl.request("graph.submit", {"graph": graph})) for _ in range(n_each)]
                sent = {}
                for ts, f in futs:
                    sent[f.result(120)["job"]] = ts
                t_acc = time.perf_counter()
                lat = []
                while sent:
                    ev = cl.next_event(timeout=120)
                    j = ev.data.get("job")
                    if ev.name == "job.result" and j in sent:
                        lat.append(time.perf_counter() - sent.pop(j))
                    elif ev.name in ("job.failed", "job.canceled") and j in sent:
                        raise RuntimeError(f"{ev.name}: {ev.data}")
                stats[k] = {"start": t0, "accepted": t_acc, "end": time.perf_counter(), "lat": lat}

            threads = [threading.Thread(target=worker, args=(k, cl)) for k, cl in enumerate(clients)]
            for t in threads:
                t.start()
            barrier.wait()
            for t in threads:
                t.join(300)
            if any(not s for s in stats):
                raise RuntimeError("a client did not finish its jobs")
            t0 = min(s["start"] for s in stats)
            t_end = max(s["end"] for s in stats)
            t_acc = max(s["accepted"] for s in stats)
            lat = [x for s in stats for x in s["lat"]]
            total = n_each * len(clients)
            return {"jobs": total, "elapsed": t_end - t0, "jobs_per_s": total / (t_end - t0),
                    "submit_per_s": total / (t_acc - t0), "lat_median": median(lat), "lat_max": max(lat)}

        one_round(max(1, njobs // 2))      # warm-up (first job imports torch in the job thread, etc.)
        rounds = [one_round(njobs) for _ in range(ctx.queue_rounds)]
        best = sorted(rounds, key=lambda r: r["jobs_per_s"])[len(rounds) // 2]
        r4.tables.append((["round", "jobs", "elapsed s", "jobs/s end to end", "submits accepted/s",
                           "latency median ms", "latency max ms"],
                          [[str(i + 1), str(r["jobs"]), f"{r['elapsed']:.3f}", f"{r['jobs_per_s']:.1f}",
                            f"{r['submit_per_s']:.1f}", ms(r["lat_median"]), ms(r["lat_max"])]
                           for i, r in enumerate(rounds)]))
        r4.checks.append(Check("B4", f"{nclients}×{njobs} minimal jobs, jobs/s (median round)", best["jobs_per_s"],
                               200.0, "jobs/s", higher_is_better=True))
        r4.raw = {"rounds": rounds}
    finally:
        for cl in clients:
            cl.close()
        admin.close()
    return [r4]


# ---- B5: memory while receiving a big layer ---------------------------------------------------------------------
def b5_memory(ctx) -> list[Result]:
    side = ctx.big_side
    r5 = Result("B5", "Daemon memory while receiving one big layer (chunked upload)")
    tile = painting(1024, 1024, seed=5)
    reps = side // 1024 if side >= 1024 else 1
    img = np.tile(tile, (reps, reps, 1))[:side, :side] if side >= 1024 else painting(side, side, seed=5)
    data = bytes(mutate(bytearray(img.tobytes()), 7))
    size = len(data)
    del img
    with Daemon(ctx.tmp / "engine-b5", []) as dmn:
        c = dmn.client()
        try:
            c.upload(bytes(mutate(bytearray(8 * 1024 * 1024), 1)))   # warm the chunked path
            time.sleep(0.5)
            idle = proc_status(dmn.pid)["VmRSS"]
            can_reset = reset_peak_rss(dmn.pid)
            peak_poll = [idle]
            stop = threading.Event()

            def poll():
                while not stop.is_set():
                    try:
                        peak_poll.append(proc_status(dmn.pid)["VmRSS"])
                    except OSError:
                        return
                    time.sleep(0.002)

            th = threading.Thread(target=poll, daemon=True)
            th.start()
            t0 = time.perf_counter()
            c.upload(data)
            dt = time.perf_counter() - t0
            stop.set()
            th.join()
            st = proc_status(dmn.pid)
            hwm = st["VmHWM"] if can_reset else max(peak_poll)
            peak = max(hwm, max(peak_poll))
            after = st["VmRSS"]
        finally:
            c.close()
    r5.setup = (f"fresh daemon (no models), one {side}×{side} RGBA layer = {size / 2**20:.0f} MiB sent with "
                f"client.upload (4 MiB chunks, pipelined); idle = VmRSS after a warm-up upload; peak = VmHWM "
                f"{'after resetting it (clear_refs 5)' if can_reset else '(reset not possible: polled VmRSS)'} "
                f"and VmRSS polled every 2 ms")
    r5.tables.append((["idle RSS MiB", "peak RSS MiB", "peak − idle MiB", "RSS after MiB", "layer MiB",
                       "(peak − idle) / layer", "upload s", "MiB/s"],
                      [[f"{idle / 2**20:.0f}", f"{peak / 2**20:.0f}", f"{(peak - idle) / 2**20:.0f}",
                        f"{after / 2**20:.0f}", f"{size / 2**20:.0f}", f"{(peak - idle) / size:.2f}×",
                        f"{dt:.2f}", f"{size / dt / 2**20:.0f}"]]))
    r5.checks.append(Check("B5", "daemon peak RSS above idle / layer size", (peak - idle) / size, 2.0, "×"))
    r5.raw = {"idle": idle, "peak": peak, "after": after, "size": size, "upload_s": dt}
    return [r5]


def _write_new_file(path, data: bytes) -> float:
    """Seconds to write data to a new file and fsync it, as the engine does with an upload (kept until B1 ends,
    so every write gets fresh page-cache pages, like new blobs do)."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t0


# ---- B7: a signed-in user's latency while strangers flood the engine ---------------------------------------------
UPGRADE = (b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _pings(c, n: int, gap: float) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.call("ping", timeout=30)
        out.append(time.perf_counter() - t0)
        time.sleep(gap)
    return out


def b7_flood(ctx) -> list[Result]:
    """1,000 unauthenticated sockets (half-sent headers, and finished upgrades that never say hello) plus a login
    flood, all on loopback, bounded in count and time; a signed-in user pings meanwhile."""
    import socket
    from urllib.parse import urlparse

    from protocol.client import Client
    from protocol.errors import ProtocolError

    n_socks = 100 if ctx.smoke else 1000
    n_pings = 30 if ctx.smoke else 300
    r7 = Result("B7", "A signed-in user's ping while 1,000 strangers' sockets and a login flood hit the engine")
    with Daemon(ctx.tmp / "engine-b7", []) as dmn:
        dmn.cli("users", "add", "victim", "--password", "victim-pw")
        u = urlparse(dmn.url)
        c = dmn.client()
        try:
            quiet = _pings(c, n_pings, 0.01)
            stop = threading.Event()
            socks: list[socket.socket] = []
            logins = {"tries": 0, "rate_limited": 0, "unauthenticated": 0, "other": 0}

            def open_sockets():
                for i in range(n_socks):
                    if stop.is_set():
                        return
                    try:
                        s = socket.create_connection((u.hostname, u.port), timeout=5)
                        s.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n" if i % 2 else UPGRADE)
                        socks.append(s)
                    except OSError:
                        pass

            def flood_logins():
                while not stop.is_set():
                    try:
                        with Client(dmn.url, reconnect=False) as x:
                            x.connect()
                            for _ in range(20):
                                if stop.is_set():
                                    break
                                logins["tries"] += 1
                                try:
                                    x.login("victim", "guess")
                                except ProtocolError as exc:
                                    logins[exc.code if exc.code in logins else "other"] += 1
                    except Exception:
                        logins["other"] += 1

            threads = [threading.Thread(target=open_sockets, daemon=True)] + \
                [threading.Thread(target=flood_logins, daemon=True) for _ in range(4)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(0.5)
            flooded = _pings(c, n_pings, 0.01)
            stop.set()
            for t in threads:
                t.join(30)
            flood_s = time.perf_counter() - t0
            time.sleep(2.0)   # let the engine's close frames and cuts arrive
            cut = 0   # sockets the engine closed or sent a close frame to
            for s in socks:
                s.setblocking(False)
                try:
                    got = s.recv(4096)
                    cut += got == b"" or b"\x88" in got
                except BlockingIOError:
                    pass
                except OSError:
                    cut += 1
                s.close()
            status = proc_status(dmn.pid)
        finally:
            c.close()

    def row(name, xs):
        xs = sorted(xs)
        return [name, ms(median(xs)), ms(xs[int(len(xs) * 0.99) - 1]), ms(xs[-1])]

    r7.setup = (f"fresh daemon (no models), default limits; one signed-in client sends {n_pings} pings 10 ms apart, "
                f"first alone, then while {n_socks} raw sockets open (half of them never finish their headers, "
                f"half finish a WebSocket upgrade and never sign in) and 4 threads sign in with a wrong password "
                f"in a loop; all on loopback, {flood_s:.1f} s in all")
    r7.tables.append((["pings", "p50 ms", "p99 ms", "max ms"], [row("alone", quiet), row("during the flood", flooded)]))
    r7.tables.append((["sockets opened", "cut by the engine by the end", "login tries", "rate_limited",
                       "unauthenticated (checked)", "engine RSS MiB after"],
                      [[str(len(socks)), str(cut), str(logins["tries"]), str(logins["rate_limited"]),
                        str(logins["unauthenticated"]), f"{status['VmRSS'] / 2**20:.0f}"]]))
    p99 = sorted(flooded)[int(len(flooded) * 0.99) - 1]
    r7.checks.append(Check("B7", "signed-in ping p99 during the flood", p99 * MS, 50.0, "ms"))
    r7.raw = {"quiet": quiet, "flooded": flooded, "sockets": len(socks), "cut": cut, **logins}
    return [r7]


# ---- B8: a plain upscale, generate → job.result (issue 15 item 13) --------------------------------------------
def b8_upscale_result(ctx) -> list[Result]:
    """Time from `generate` to job.result for a plain (Lanczos) 2× upscale of half the layer size (full run:
    1920×1080 → 3840×2160), and on to images.added (the gallery's PNG + thumbnail + row, archived after the
    result since issue 15 item 13). A/B against another checkout with PAINTBRIDGE_BENCH_ENGINE_ROOT."""
    from protocol.errors import ProtocolError

    w, h = ctx.layer_size[0] // 2, ctx.layer_size[1] // 2
    r = Result("B8", f"Plain upscale {w}×{h} → {2 * w}×{2 * h}: generate → job.result, and → gallery entry")
    r.setup = (f"a {w}×{h} painting uploaded once; `generate` mode upscale, scale 2, no upscaler model; {ctx.reps} "
               "timed runs after 1 warm-up; times on the client from the generate call to the job.result event, "
               "and to images.added (absent from engines that archive before job.result: there the gallery "
               "entry exists when job.result arrives)")
    c = ctx.daemon.client()
    try:
        src = painting(w, h, seed=7)
        sha = c.upload(src.tobytes())
        layer = {"sha256": sha, "w": w, "h": h, "format": "rgba8", "x": 0, "y": 0}
        to_result, to_added = [], []
        announces = True   # until the warm-up run shows an engine that sends no images.added
        for i in range(ctx.reps + 1):
            t0 = time.perf_counter()
            job = c.call("generate", {"mode": "upscale", "image": layer, "scale": 2.0,
                                      "prompt": f"run {i}"})["job"]
            seen, data = _job_timeline(c, job)
            t_res = seen["job.result"][0]
            assert (data["layers"][0]["w"], data["layers"][0]["h"]) == (2 * w, 2 * h)
            t_add = None
            if announces:
                try:
                    c.next_event(timeout=30, name="images.added", match=lambda e: e.data.get("job") == job)
                    t_add = time.perf_counter()
                except ProtocolError:
                    announces = False   # an engine that archives before job.result
            if i == 0:
                continue
            to_result.append(t_res - t0)
            to_added.append((t_add if t_add is not None else t_res) - t0)
        r.tables.append((["", "median ms", "spread"],
                         [["generate → job.result", ms(median(to_result)), spread(to_result)],
                          ["generate → gallery entry (images.added, or job.result)", ms(median(to_added)),
                           spread(to_added)]]))
        r.raw = {"to_result_s": to_result, "to_added_s": to_added}
    finally:
        c.close()
    return [r]


# ---- B10: refine in tiles ---------------------------------------------------------------------------------------
def _job_peak(dmn, c, args: dict) -> tuple[int, int, float, dict]:
    """(idle RSS, peak RSS, seconds, result layer) of the daemon over one generate job, to its gallery entry."""
    from protocol.errors import ProtocolError

    idle = proc_status(dmn.pid)["VmRSS"]
    can_reset = reset_peak_rss(dmn.pid)
    peak_poll = [idle]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            try:
                peak_poll.append(proc_status(dmn.pid)["VmRSS"])
            except OSError:
                return
            time.sleep(0.005)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        job = c.call("generate", args)["job"]
        seen, data = _job_timeline(c, job, timeout=3600)
        dt = seen["job.result"][0] - t0
        try:
            c.next_event(timeout=120, name="images.added", match=lambda e: e.data.get("job") == job)
        except ProtocolError:
            pass   # an engine that archives before job.result
    finally:
        stop.set()
        th.join()
    st = proc_status(dmn.pid)
    peak = max(st["VmHWM"] if can_reset else 0, max(peak_poll))
    return idle, peak, dt, data["layers"][0]


def b10_refine_memory(ctx) -> list[Result]:
    """Daemon memory for upscale with a model (refine in tiles) to side×side (full run 4096×4096), against one
    tile of the same size refined alone: what the job adds above one tile is the image's own copies, not the
    model's activations over the image."""
    side = ctx.refine_side
    tile = ctx.refine_tile
    r = Result("B10", f"Upscale {side // 2}×{side // 2} → {side}×{side} refined in {tile}-px tiles: daemon memory")
    c = ctx.daemon.client()
    try:
        def layer(n, seed):
            img = painting(n, n, seed=seed)
            return {"sha256": c.upload(img.tobytes()), "w": n, "h": n, "format": "rgba8", "x": 0, "y": 0}

        common = {"mode": "upscale", "model": "tiny-sd15", "prompt": "detailed", "steps": 2, "strength": 0.5,
                  "guidance": 1.0, "tile": tile, "seed": 1}
        _job_peak(ctx.daemon, c, {**common, "image": layer(64, 3), "tile": 64})        # warm: model loaded
        one = layer(tile, 4)
        idle1, peak1, dt1, _ = _job_peak(ctx.daemon, c, {**common, "image": one, "scale": 1.0})
        big = layer(side // 2, 5)
        idle2, peak2, dt2, out = _job_peak(ctx.daemon, c, {**common, "image": big, "scale": 2.0})
        assert (out["w"], out["h"]) == (side, side)
    finally:
        c.close()
    from engine.tiles import default_overlap, layout

    n_tiles = len(layout(side, side, tile, default_overlap(tile, 0.5)))
    image = side * side * 4
    r.setup = (f"the shared daemon with the tiny demo SD1.5 model (random weights: the work, not the picture, is "
               f"real), CPU; `generate` upscale with a model, scale 2 (Lanczos), steps 2 at strength 0.5, guidance 1 "
               f"(one denoising step per tile, no CFG batch), tile {tile}, default overlap; {n_tiles} tiles. Peak = VmHWM after "
               f"resetting it, and VmRSS polled every 5 ms, from `generate` to the gallery entry (PNG archived). "
               f"'one tile' = the same request for a {tile}×{tile} image at scale 1 (a one-tile layout).")
    # Peaks, not peaks above each job's idle: the allocator keeps what the one-tile job used, so the second job's
    # idle starts higher and its own "peak − idle" would hide the tile's activations it reuses.
    extra = max(0, peak2 - peak1)
    r.tables.append((["job", "idle RSS MiB", "peak RSS MiB", "peak − first idle MiB", "seconds"],
                     [[f"one tile {tile}×{tile}", f"{idle1 / 2**20:.0f}", f"{peak1 / 2**20:.0f}",
                       f"{(peak1 - idle1) / 2**20:.0f}", f"{dt1:.1f}"],
                      [f"{side}×{side} in {n_tiles} tiles", f"{idle2 / 2**20:.0f}", f"{peak2 / 2**20:.0f}",
                       f"{(peak2 - idle1) / 2**20:.0f}", f"{dt2:.1f}"]]))
    r.checks.append(Check("B10", f"peak above the one-tile job's peak / the {side}² RGBA image "
                                f"({image / 2**20:.0f} MiB)",
                          extra / image, 8.0, "×"))
    r.notes.append("the bound: the tiled job's peak is the one-tile job's peak plus at most 8 image-sized "
                   "copies (the input layer, its Lanczos upscale, the refine's unrefined source and merged output, "
                   "the result layer's bytes, the gallery PNG's encoding buffers); the model's activations are "
                   "one tile's whatever the image size")
    r.raw = {"idle_one": idle1, "peak_one": peak1, "idle": idle2, "peak": peak2, "image": image, "tiles": n_tiles,
             "seconds_one": dt1, "seconds": dt2}
    return [r]


# ---- BL: live painting ----------------------------------------------------------------------------------------
def _live_round(c, layers, args: dict, gap: float, preempt: bool) -> dict:
    """One live round: the first input starts a generation; while it runs, len(layers)-1 more inputs arrive
    `gap` s apart. Returns how many jobs ran, how many were superseded, and the time from the last input to its
    result."""
    events, jobs = [], []

    def pull(until, timeout=600.0):
        end = time.monotonic() + timeout
        while not until():
            if time.monotonic() > end:
                raise TimeoutError("live round: " + str([(e[1].name, e[1].data.get("job")) for e in events][-10:]))
            for ev in c.drain(1000):
                events.append((time.perf_counter(), ev))
            time.sleep(0.002)

    def final(job):
        return next(((t, e) for t, e in events if e.data.get("job") == job and
                     e.name in ("job.result", "job.failed", "job.canceled")), None)

    jobs.append(c.call("generate", {**args, "image": layers[0], "live": True})["job"])
    pull(lambda: any(e.name == "job.progress" and e.data["job"] == jobs[0] for _, e in events))
    for lay in layers[1:]:
        time.sleep(gap)
        t_last = time.perf_counter()
        jobs.append(c.call("generate", {**args, "image": lay, "live": True, "preempt": preempt})["job"])
    pull(lambda: all(final(j) for j in jobs))
    ran = {e.data["job"] for _, e in events if e.name == "job.started"} & set(jobs)
    t_done, last = final(jobs[-1])
    assert last.name == "job.result", last.data
    superseded = sum(1 for j in jobs if (f := final(j)) and f[1].data.get("reason") == "superseded")
    return {"ran": len(ran), "superseded": superseded, "latency": t_done - t_last}


def bl_live(ctx) -> list[Result]:
    n = 5 if ctx.smoke else 10
    steps = 8 if ctx.smoke else 20
    size = 64
    r = Result("BL", "Live painting: rapid input changes during one generation")
    r.setup = (f"tiny SD1.5 demo model, img2img {size}×{size}, strength 0.5, {steps} steps (≈{steps // 2} denoising), "
               f"{n} live inputs on one connection: the first starts a generation, the other {n - 1} arrive 20 ms "
               f"apart while it runs; {ctx.reps} rounds per mode, medians. 'alone': the same job as an ordinary "
               f"generate, from the call to job.result")
    c = ctx.daemon.client()
    try:
        base = painting(size, size, 1)
        layers = []
        for i in range(n * (ctx.reps + 2) * 2):
            px = base.copy()
            px[(i * 3) % size, :, :3] = (i * 37) % 256
            layers.append({"sha256": c.upload(px.tobytes()), "w": size, "h": size, "format": "rgba8", "x": 0, "y": 0})
        args = {"mode": "img2img", "model": "tiny-sd15", "prompt": "live", "strength": 0.5, "steps": steps,
                "seed": 5}
        alone = []
        for i in range(ctx.reps + 1):
            t0 = time.perf_counter()
            job = c.call("generate", {**args, "image": layers[-1 - i]})["job"]
            _job_timeline(c, job)
            if i:
                alone.append(time.perf_counter() - t0)
        gen = median(alone)
        rows, raw = [], {"alone_s": alone}
        k = 0
        for preempt in (False, True):
            rounds = []
            for _ in range(ctx.reps):
                rounds.append(_live_round(c, layers[k:k + n], args, 0.02, preempt))
                k += n
            lat = median([x["latency"] for x in rounds])
            ran = max(x["ran"] for x in rounds)
            raw["preempt" if preempt else "finish"] = rounds
            rows.append(["preempt" if preempt else "finish the running one", str(n), str(ran),
                         str(min(x["superseded"] for x in rounds)), ms(lat), ms(gen), f"{lat / gen:.2f}×"])
            r.checks.append(Check(f"BL{'p' if preempt else ''}", f"jobs that ran for {n} inputs"
                                  f"{' (preempt)' if preempt else ''}", ran, 2, "jobs"))
            if preempt:
                r.checks.append(Check("BLp", "last input → its result with preempt / generation alone", lat / gen,
                                      1.5, "×"))
        r.tables.append((["mode", "inputs", "jobs that ran (max)", "superseded (min)", "last input → result ms",
                          "generation alone ms", "ratio"], rows))
        r.notes.append("Without preempt the newest input waits for the running generation to finish, then runs: "
                       "up to about 2× the generation time. With preempt the running one stops at its next step.")
        stall = _krita_live_stall(ctx)
        if stall:
            r.tables.append((["Krita (main thread, live mode running)", "ms"], [[k2, str(v)] for k2, v in stall.items()]))
        else:
            r.notes.append("Krita's main-thread stall: not measured in this run (smoke run, or no Krita/xvfb-run); "
                           "tests/hosts/test_krita.py::test_live_mode_in_krita prints it.")
        r.raw = raw
    finally:
        c.close()
    return [r]


def _krita_live_stall(ctx) -> dict:
    """The Krita host test's live script against this daemon (full runs, when Krita is installed): the main
    thread's longest stall while live mode sends and generates, and the plug-in's own drain time."""
    if ctx.smoke:
        return {}
    try:
        from engine.plugin_build import build
        from tests.hosts.krita.krita_host import run_in_krita, unavailable_reason, write_blank_png
    except Exception:
        return {}
    if unavailable_reason("krita"):
        return {}
    from .common import ROOT

    zip_path = build("krita", ctx.tmp / "paintbridge-krita.zip")
    png = write_blank_png(ctx.tmp / "live.png", 64, 64)
    res = run_in_krita(zip_path, ROOT / "tests" / "hosts" / "krita" / "scripts" / "live_mode.py", timeout=600,
                       documents=[png], params={"url": ctx.daemon.url, "token": ctx.daemon.token,
                                                "model": "tiny-sd15"})
    if not res.get("ok"):
        return {"error": (res.get("error") or "failed").splitlines()[-1][:200]}
    return {"longest stall while live mode works (5 ms timer)": res["stall_ms"],
            "the same wait with live mode off": res["stall_baseline_ms"],
            "plug-in drain: longest": res["drain_max_ms"], "plug-in drain: mean": res["drain_mean_ms"],
            "plug-in parts: longest": str(res.get("drain_parts_ms"))}
