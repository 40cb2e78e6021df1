"""`python -m bench [--smoke] [--out DIR] [--only B1,B3]`: run every benchmark, write DIR/RESULTS.md (+ results.json).

Default DIR is bench/. Full run: about 5–10 minutes on a 2-core machine; --smoke: tiny sizes, well under a minute.
Exit status 0 when every benchmark ran (missed targets are reported, not failures); 1 when one broke.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from .common import ROOT, Daemon, machine, versions
from .report import render


class Ctx:
    pass


def make_ctx(args, tmp: Path) -> Ctx:
    ctx = Ctx()
    ctx.tmp = tmp
    ctx.smoke = args.smoke
    if args.smoke:
        ctx.layer_size = (256, 144)
        ctx.reps = 2
        ctx.has_reps = 20
        ctx.steps = 2
        ctx.gen_sizes = [64]
        ctx.preview_reps = 20
        ctx.clients, ctx.jobs_per_client, ctx.queue_rounds = 2, 3, 1
        ctx.big_side = 512
        ctx.refine_side, ctx.refine_tile = 128, 64
    else:
        ctx.layer_size = (3840, 2160)
        ctx.reps = args.reps or 5
        ctx.has_reps = 200
        ctx.steps = 10
        ctx.gen_sizes = [64, 128]
        ctx.preview_reps = 500
        ctx.clients, ctx.jobs_per_client, ctx.queue_rounds = 10, 10, 3
        ctx.big_side = 8192
        # PAINTBRIDGE_BENCH_REFINE_SIDE: a smaller B10 where the CPU cannot refine 16 MP in reasonable time
        ctx.refine_side = int(os.environ.get("PAINTBRIDGE_BENCH_REFINE_SIDE") or 4096)
        # PAINTBRIDGE_BENCH_REFINE_TILE: smaller tiles on a CPU (the demo model's 512-px tile, 256² latents with
        # attention over all of them, takes ~27 s here; a 256-px one ~1.8 s)
        ctx.refine_tile = int(os.environ.get("PAINTBRIDGE_BENCH_REFINE_TILE") or min(512, ctx.refine_side // 4))
    return ctx


def start_baselines() -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "bench.baselines", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"baseline server did not start: {line}{proc.stdout.read()}")
    return proc, line.split("listening on", 1)[1].strip()


def start_profiler(folder: Path, key: str, pid: int):
    """py-spy (pip install py-spy) sampling the daemon, all threads, idle frames dropped."""
    import shutil

    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("bench: --profile needs py-spy (pip install py-spy)", file=sys.stderr)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "250", "--threads", "--format", "raw",
                             "-o", str(folder / f"{key}.collapsed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def stop_profiler(proc):
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one or two repetitions (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench", help="folder for RESULTS.md and results.json")
    ap.add_argument("--only", default="", help="comma-separated subset, e.g. B1,B3 (B2 comes with B1, B6 with B3)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record the daemon with py-spy during each benchmark (collapsed stacks in this folder)")
    ap.add_argument("--reps", type=int, default=0, help="timed repetitions for B1/B3 (default 5)")
    args = ap.parse_args(argv)
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    args.out.mkdir(parents=True, exist_ok=True)

    results, errors = [], 0
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="pb-bench-") as tmpd:
        tmp = Path(tmpd)
        ctx = make_ctx(args, tmp)
        print(f"bench: {'smoke' if args.smoke else 'full'} run, work dir {tmp}", flush=True)

        from engine.models.demo import make_demo

        models = tmp / "models"
        ctx.model_path = make_demo(models / "build", "sd15").rename(models / "tiny-sd15")
        base_proc, ctx.baselines_url = start_baselines()
        ctx.daemon = Daemon(tmp / "engine", ["--models", str(models)]).start()
        try:
            from . import cases, hosts

            plan = [("B1", cases.b1_b2_transport), ("B3", cases.b3_b6_engine), ("B4", cases.b4_queue),
                    ("B5", cases.b5_memory), ("B7", cases.b7_flood), ("B8", cases.b8_upscale_result),
                    ("B9", hosts.b9_hosts), ("B10", cases.b10_refine_memory), ("BL", cases.bl_live)]
            for key, fn in plan:
                if only and key not in only and not ({"B2", "B6"} & only and key in ("B1", "B3")):
                    continue
                t0 = time.perf_counter()
                load0 = os.getloadavg()[0]
                print(f"bench: {key} ...", flush=True)
                spy = start_profiler(args.profile, key, ctx.daemon.pid) if args.profile else None
                try:
                    got = fn(ctx)
                except Exception as exc:
                    errors += 1
                    tb = traceback.format_exc()
                    print(tb, file=sys.stderr, flush=True)
                    from .cases import Result
                    got = [Result(key, fn.__name__, error=f"{type(exc).__name__}: {exc}\n\n{tb[-2500:]}")]
                    if ctx.daemon.proc.poll() is not None:
                        print("bench: the daemon died; its last output:\n" + "".join(ctx.daemon.log[-40:]),
                              file=sys.stderr)
                        ctx.daemon = Daemon(tmp / "engine", ["--models", str(models)]).start()
                for r in got:
                    print(f"bench: {r.id}: " + ("ERROR " + r.error.splitlines()[0] if r.error else
                          "; ".join(f"{c.what}: {c.measured:.3g} {c.unit} (target {c.target:g}) "
                                    f"{'PASS' if c.passed else 'MISS'}" for c in r.checks)), flush=True)
                if spy is not None:
                    stop_profiler(spy)
                print(f"bench: {key} took {time.perf_counter() - t0:.1f}s", flush=True)
                for r in got:
                    r.notes.append(f"Machine load (1-min load average on {os.cpu_count()} cores) before / after: "
                                   f"{load0:.2f} / {os.getloadavg()[0]:.2f}; anything above ~0.5 means other "
                                   "processes competed for the CPU during this benchmark.")
                results.extend(got)
        finally:
            ctx.daemon.stop()
            base_proc.kill()
            base_proc.wait()

    meta = {"machine": machine(), "versions": versions(), "smoke": args.smoke, "started": started,
            "duration_s": time.time() - started, "command": "python -m bench" + (" --smoke" if args.smoke else "")}
    old = args.out / "results.json"
    if only and old.exists():   # a partial run replaces its own sections and keeps the others
        from .cases import Check, Result
        fresh = {r.id for r in results}
        for d in json.loads(old.read_text()).get("results", []):
            if d["id"] not in fresh:
                results.append(Result(**{**d, "checks": [Check(**c) for c in d.get("checks", [])],
                                         "tables": [tuple(t) for t in d.get("tables", [])]}))
    results.sort(key=lambda r: r.id)
    md = render(meta, results)
    (args.out / "RESULTS.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]},
                                                      indent=1, default=str))
    print(f"bench: wrote {args.out / 'RESULTS.md'} in {meta['duration_s']:.0f}s", flush=True)
    return 1 if errors else 0
