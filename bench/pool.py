"""Worker pool benchmark: what a job pays for going through the pool (Ray Serve) instead of running in the engine's
own process, and what the pool costs in memory, with N CPU workers on this machine (or GPU workers: bench/gpu.sh
--pool N).

    python -m bench.pool [--workers 1,2] [--jobs 8] [--steps 1] [--size 64] [--model DIR] [--out DIR]

One tiny demo SD1.5 model (or --model: a model folder, e.g. bench/gpu.py's full-size build) and the same jobs
everywhere:
  dispatch   a graph without a model (a 64×64 layer resized: no torch), one at a time, submit → job.result at
             the client: what going through the pool adds to a job (queue → Serve → worker → the blob route
             and back), with next to no work to hide it; min and median of 2 × --jobs;
  latency    a txt2img job (--size px, --steps steps, fixed seed), one at a time, submit → job.result, median of
             --jobs (after warm-up jobs that load the model on every worker);
  throughput --jobs jobs submitted at once, from the first submit to the last job.result;
  memory     the resident memory (PSS: shared pages counted once) of the engine and every process it started
             (with a pool: Ray's GCS, raylet, agents, Serve controller and the workers), once warm.
Writes DIR/pool.md (default bench/) and prints it; bench/report.py puts pool.md into RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from .common import Daemon, machine

ROOT = Path(__file__).resolve().parents[1]


def pss_tree(pid: int) -> tuple[int, int]:
    """(PSS bytes, process count) of pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, count, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        count += 1
                        break
        except OSError:
            continue
    return total, count


def one_job(c, args: dict, timeout: float = 600) -> float:
    t = time.perf_counter()
    job = c.call("generate", args)["job"]
    while True:
        ev = c.next_event(timeout, match=lambda e: e.data.get("job") == job)
        if ev.name == "job.result":
            return time.perf_counter() - t
        if ev.name in ("job.failed", "job.canceled"):
            raise RuntimeError(f"job {job}: {ev.data}")


def burst(c, args: dict, n: int, timeout: float = 900) -> float:
    t = time.perf_counter()
    jobs = {c.call("generate", {**args, "seed": args["seed"] + i})["job"] for i in range(n)}
    while jobs:
        ev = c.next_event(timeout, match=lambda e: e.data.get("job") in jobs)
        if ev.name == "job.result":
            jobs.discard(ev.data["job"])
        elif ev.name in ("job.failed", "job.canceled"):
            raise RuntimeError(f"job {ev.data}")
    return time.perf_counter() - t


RESIZE = {"nodes": {"i": {"type": "image_input"}, "r": {"type": "resize", "width": 32, "height": 32},
                    "o": {"type": "output", "name": "small"}},
          "edges": [{"from": ["i", "image"], "to": ["r", "image"]}, {"from": ["r", "image"], "to": ["o", "image"]}]}


def graph_job(c, layer: dict, timeout: float = 300) -> float:
    graph = {**RESIZE, "nodes": {**RESIZE["nodes"], "i": {"type": "image_input", "layer": layer}}}
    t = time.perf_counter()
    job = c.call("graph.submit", {"graph": graph})["job"]
    while True:
        ev = c.next_event(timeout, match=lambda e: e.data.get("job") == job)
        if ev.name == "job.result":
            return time.perf_counter() - t
        if ev.name in ("job.failed", "job.canceled"):
            raise RuntimeError(f"job {job}: {ev.data}")


def measure(models: Path, workers: int, args: dict, jobs: int, tmp: Path) -> dict:
    extra = ["--workers", str(workers)] if workers else []
    eng = Daemon(Path(tempfile.mkdtemp(dir=tmp)), ["--models", str(models), *extra])
    t0 = time.perf_counter()
    eng.start(timeout=600)
    c = eng.client()
    try:
        started = None
        if workers:
            while True:
                st = c.call("pool.status", {})
                if st["state"] == "up" and st["up"] >= workers:
                    break
                if st["state"] == "down" and "could not start" in st["message"]:
                    raise RuntimeError(st["message"])
                time.sleep(0.5)
            started = time.perf_counter() - t0
        sha = c.upload(bytes(range(256)) * 64)   # 64×64 rgba8
        layer = {"sha256": sha, "w": 64, "h": 64, "format": "rgba8", "x": 0, "y": 0}
        for _ in range(2):
            graph_job(c, layer)
        dispatch = [graph_job(c, layer) for _ in range(2 * jobs)]
        burst(c, args, max(2, 2 * workers))   # warm: the model loaded on every worker
        lat = [one_job(c, {**args, "seed": args["seed"] + i}) for i in range(jobs)]
        through = burst(c, args, jobs)
        pss, nproc = pss_tree(eng.pid)
        return {"workers": workers, "start_s": started, "dispatch": dispatch, "latency": lat, "burst_s": through, "jobs": jobs,
                "pss": pss, "procs": nproc}
    finally:
        c.close()
        eng.stop()


def render(rows: list[dict], args: dict, note: str) -> str:
    base = next(r for r in rows if r["workers"] == 0)
    base_med = statistics.median(base["latency"])
    base_disp = statistics.median(base["dispatch"])
    out = ["## Worker pool (Ray Serve): dispatch overhead and memory", "",
           f"`python -m bench.pool` on {note}; job: txt2img {args['width']} px, {args['steps']} step(s), tiny demo "
           "SD1.5; one job at a time (median of the latencies) and a burst of the same number at once. Memory: "
           "PSS of the engine and every process it started, warm.", "",
           "| runner | pool start | no-model job (median, min) | its overhead vs in process | txt2img latency (median, min–max) | vs in process | burst: jobs/s | memory (PSS) | processes |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        med = statistics.median(r["latency"])
        name = "in process" if not r["workers"] else f"pool, {r['workers']} CPU worker{'s' * (r['workers'] > 1)}"
        over = "—" if not r["workers"] else f"{(med - base_med) * 1000:+.0f} ms"
        start = "—" if r["start_s"] is None else f"{r['start_s']:.0f} s"
        disp = statistics.median(r["dispatch"])
        dover = "—" if not r["workers"] else f"{(disp - base_disp) * 1000:+.0f} ms"
        out.append(f"| {name} | {start} | {disp * 1000:.0f} ms ({min(r['dispatch']) * 1000:.0f}) | {dover} | "
                   f"{med * 1000:.0f} ms ({min(r['latency']) * 1000:.0f}–{max(r['latency']) * 1000:.0f}) | {over} | "
                   f"{r['jobs'] / r['burst_s']:.2f} | {r['pss'] / 2 ** 20:.0f} MiB | {r['procs']} |")
    out += ["",
            "- What the pool costs: a Ray cluster (GCS, raylet, its agents, Serve's controller) next to the engine, "
            "and per worker a process that holds torch and its own copy of each model it has loaded; the engine "
            "itself then loads no model. CPU workers on one machine share its cores: they show the mechanism, not a "
            "speed-up (one machine's cores are already all used by one in-process job).",
            "- What a GPU pool gives: one job per GPU at a time, so N jobs at once finish in about one job's time "
            "(plus the dispatch overhead above, which is fixed per job and small against a 512-1024 px, 20-step "
            "job); jobs of one model go to a worker that holds it. `bash bench/gpu.sh --arch sd15 --pool N` "
            "measures it on a machine with N GPUs: the same table with full-size SD1.5 at 512 px, 20 steps.",
            ""]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pool")
    ap.add_argument("--workers", default="1,2", help="pool sizes to measure, comma-separated")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", help="a model folder to use instead of a tiny demo SD1.5")
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--note", default="", help="what machine this is, for the table's header")
    a = ap.parse_args(argv)
    args = {"model": "", "prompt": "a lighthouse", "width": a.size, "height": a.size, "steps": a.steps, "seed": 1}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        models = tmp / "models"
        models.mkdir()
        if a.model:
            (models / Path(a.model).name).symlink_to(Path(a.model).resolve())
            args["model"] = Path(a.model).name
        else:
            from engine.models.demo import make_demo

            make_demo(tmp / "build", "sd15").rename(models / "tiny-sd15")
            args["model"] = "tiny-sd15"
        rows = []
        for n in [0] + [int(x) for x in a.workers.split(",") if x.strip()]:
            rows.append(measure(models, n, args, a.jobs, tmp))
            print(f"pool bench: {n} worker(s): median {statistics.median(rows[-1]['latency']) * 1000:.0f} ms, "
                  f"{rows[-1]['pss'] / 2 ** 20:.0f} MiB", flush=True)
    m = machine()
    note = a.note or f"{m.get('cpu', '?')} ({m.get('cores', os.cpu_count())} cores), CPU workers"
    text = render(rows, args, note)
    Path(a.out, "pool.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
