"""GPU benchmark: full-size SD1.5 and SDXL architectures (real UNet/VAE/text-encoder configs, random weights,
built locally, nothing downloaded), fp16, native size, 20 steps: it/s through the daemon vs bare diffusers.

Run through bench/gpu.sh (checks CUDA and dependencies, caps the run's time). Prints a compact results block
and writes gpu-results.json into $OUT (if set) or bench/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import ROOT, Daemon, median, versions

CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
# the demo byte-level tokenizer's special ids (no tokenizer files are downloaded)
TOK_IDS = dict(bos_token_id=512, eos_token_id=513, pad_token_id=513)
SD_SCHED = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")


def SYNC():
    torch.cuda.synchronize()


def _vae(**extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, **extra)


def build(arch: str, device: str = "cuda"):
    """A full-size pipeline with random weights, created directly on the GPU in fp16."""
    from diffusers import (EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine.models.demo import clip_demo_tokenizer

    torch.manual_seed(0)
    sched = EulerDiscreteScheduler(**SD_SCHED)   # schedulers and tokenizers stay off the device context
    if arch == "sd15":
        with torch.device(device):
            unet = UNet2DConditionModel(
                sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                cross_attention_dim=768, attention_head_dim=8)
            te = CLIPTextModel(CLIPTextConfig(**CLIP_L, **TOK_IDS))
            vae = _vae()
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=clip_demo_tokenizer(), unet=unet,
                                       scheduler=sched, safety_checker=None, feature_extractor=None,
                                       image_encoder=None, requires_safety_checker=False)
    elif arch == "sdxl":
        with torch.device(device):
            unet = UNet2DConditionModel(
                sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
            vae = _vae(scaling_factor=0.13025, force_upcast=True)
            te = CLIPTextModel(CLIPTextConfig(**CLIP_L, **TOK_IDS))
            te2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG, **TOK_IDS))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2,
                                         tokenizer=clip_demo_tokenizer(), tokenizer_2=clip_demo_tokenizer(),
                                         unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True)
    else:
        raise ValueError(arch)
    pipe.to(torch.float16)
    n = sum(p.numel() for p in pipe.unet.parameters())
    return pipe, n


def bare(path: Path, name: str, size: int, steps: int, reps: int) -> dict:
    from engine.models.loader import load_model

    model = load_model(path, name=name)
    model.pipe.set_progress_bar_config(disable=True)
    out = {"total_s": [], "its": []}
    for i in range(reps + 1):
        stamps = []

        def cb(p, step, t, kw):
            SYNC()
            stamps.append(time.perf_counter())
            return {}

        SYNC()
        t0 = time.perf_counter()
        model.pipe(prompt="a red fox in the snow", num_inference_steps=steps if i else 3, width=size,
                   height=size, guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(i),
                   output_type="np", callback_on_step_end=cb)
        SYNC()
        t1 = time.perf_counter()
        if i:
            out["total_s"].append(t1 - t0)
            out["its"].append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def through_daemon(c, name: str, size: int, steps: int, reps: int) -> dict:
    out = {"total_s": [], "its": []}
    for i in range(reps + 1):
        t0 = time.perf_counter()
        job = c.call("generate", {"mode": "txt2img", "model": name, "prompt": "a red fox in the snow",
                                  "width": size, "height": size, "steps": steps if i else 3, "guidance": 7.0,
                                  "seed": i}, timeout=300)["job"]
        stamps = []
        while True:
            ev = c.next_event(timeout=300)
            if ev.data.get("job") != job:
                continue
            if ev.name == "job.progress":
                stamps.append(time.perf_counter())
            elif ev.name == "job.result":
                c.download(ev.data["layers"][0]["sha256"])
                break
            elif ev.name in ("job.failed", "job.canceled"):
                raise RuntimeError(f"{ev.name}: {ev.data}")
        t1 = time.perf_counter()
        if i:
            out["total_s"].append(t1 - t0)
            out["its"].append((len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sd15,sdxl")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--pool", type=int, default=0, metavar="N",
                    help="then the worker pool (bench/pool.py) with N GPU workers on the first --arch model: "
                         "dispatch overhead vs in process, jobs/s of N jobs at once, memory (needs paintbridge[ray])")
    ap.add_argument("--dry-run", action="store_true",
                    help="check the harness on CPU with the tiny demo models at 64 px (no GPU needed)")
    args = ap.parse_args(argv)
    global SYNC
    if args.dry_run:
        SYNC = lambda: None  # noqa: E731
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(124))   # `timeout` → run the finally blocks, stop the daemon
    if not torch.cuda.is_available() and not args.dry_run:
        print("gpu bench: CUDA is not available", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    gpu = torch.cuda.get_device_name(0) if not args.dry_run else "CPU dry run (tiny demo models)"
    sizes = {"sd15": 64, "sdxl": 64} if args.dry_run else {"sd15": 512, "sdxl": 1024}
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="pb-gpu-"))
    models = tmp / "models"
    t_start = time.time()
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    for arch in archs:
        t0 = time.perf_counter()
        if args.dry_run:
            from engine.models.demo import make_demo
            make_demo(models / "build", arch).rename(models / f"full-{arch}")
            n = 0
        else:
            pipe, n = build(arch)
            pipe.save_pretrained(models / f"full-{arch}", safe_serialization=True)
            del pipe
            torch.cuda.empty_cache()
        print(f"gpu bench: built full-{arch} ({n / 1e6:.0f} M UNet params) in {time.perf_counter() - t0:.1f}s",
              flush=True)
    daemon = Daemon(tmp / "engine", ["--models", str(models)]).start()
    try:
        c = daemon.client(request_timeout=300)
        for arch in archs:
            name, size = f"full-{arch}", sizes[arch]
            d = through_daemon(c, name, size, args.steps, args.reps)
            print(f"gpu bench: {arch} daemon done", flush=True)
            c.call("models.unload", {"model": name}, timeout=120)
            b = bare(models / name, name, size, args.steps, args.reps)
            print(f"gpu bench: {arch} bare done", flush=True)
            results.append({"arch": arch, "size": size, "steps": args.steps, "daemon": d, "bare": b})
        c.close()
    finally:
        daemon.stop()
    v = versions()
    lines = [f"== Paintbridge GPU bench: {gpu}, torch {v['torch']}, diffusers {v['diffusers']}, fp16, "
             f"{args.steps} steps, median of {args.reps} ==",
             f"{'arch':6} {'size':>5} {'daemon it/s':>12} {'bare it/s':>10} {'it/s ratio':>10} "
             f"{'daemon s/img':>13} {'bare s/img':>11} {'overhead':>9}"]
    for r in results:
        di, bi = median(r["daemon"]["its"]), median(r["bare"]["its"])
        dt, bt = median(r["daemon"]["total_s"]), median(r["bare"]["total_s"])
        lines.append(f"{r['arch']:6} {r['size']:>5} {di:>12.2f} {bi:>10.2f} {di / bi:>10.3f} {dt:>13.3f} "
                     f"{bt:>11.3f} {(dt / bt - 1) * 100:>8.1f}%")
    lines.append(f"(total {time.time() - t_start:.0f}s; daemon s/img = generate call → job.result + blob.get; "
                 "bare = pipe(..., output_type='np'))")
    print("\n".join(lines), flush=True)
    dest = Path(os.environ.get("OUT") or (tmp if args.dry_run else ROOT / "bench"))
    (dest / "gpu-results.json").write_text(json.dumps({"gpu": gpu, "versions": v, "results": results}, indent=1))
    (dest / "gpu-results.txt").write_text("\n".join(lines) + "\n")
    if args.pool:   # one GPU per worker: N jobs at once should take about as long as one
        from . import pool

        pool.main(["--workers", str(args.pool), "--model", str(models / f"full-{archs[0]}"),
                   "--size", str(sizes[archs[0]]), "--steps", str(args.steps), "--jobs", str(max(4, 2 * args.pool)),
                   "--out", str(dest), "--note", f"{gpu}, GPU workers"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
