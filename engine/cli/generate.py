"""`paintbridge generate "prompt" -o out.png`: a client of a running engine, for a quick try and for scripts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import events
from ..config import load_config


def _token(args) -> str:
    """--token, $PAINTBRIDGE_TOKEN, or (same machine) a short-lived token minted from the data dir."""
    if args.token:
        return args.token
    if os.environ.get("PAINTBRIDGE_TOKEN"):
        return os.environ["PAINTBRIDGE_TOKEN"]
    from .. import auth   # sqlite_utils: only when a token must be minted here

    cfg = load_config(args.data_dir)
    if not (cfg.data_dir / "secret.key").exists():
        raise SystemExit(f"error: no token: pass --token, set PAINTBRIDGE_TOKEN, or run where the engine's data "
                         f"dir is ({cfg.data_dir})")
    return auth.mint_token(cfg, ttl_s=3600)[0]


def cmd_generate(args) -> int:
    # numpy, Pillow, tqdm and the client load here, not for every other subcommand
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from protocol import default_url
    from protocol.client import CONNECTED, Client
    from protocol.errors import ProtocolError

    url = args.url or default_url(port=args.port)
    client = Client(url, _token(args), app="paintbridge-cli", reconnect=False)
    try:
        client.connect()
    except ProtocolError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    if client.state != CONNECTED:
        print(f"error: not signed in ({client.state})", file=sys.stderr)
        return 1
    try:
        model = args.model
        if not model:
            models = client.call("models.list", {"type": "main"})["models"]
            if not models:
                print("error: the engine has no models (start it with --models DIR)", file=sys.stderr)
                return 1
            model = models[0]["name"]
        w, h = args.size
        req = {"mode": "txt2img", "model": model, "prompt": args.prompt, "negative_prompt": args.negative,
               "width": w, "height": h, "steps": args.steps, "guidance": args.guidance, "batch": args.batch,
               "scheduler": args.scheduler, "source": {"app": "paintbridge-cli", "document": str(args.output)}}
        if args.seed is not None:
            req["seed"] = args.seed
        for k in ("schedule", "clip_skip", "vae"):
            if getattr(args, k) is not None:
                req[k] = getattr(args, k)
        reply = client.call("generate", req)
        job = reply["job"]
        bar = tqdm(total=args.steps * args.batch, unit="step", disable=args.quiet, desc=f"seed {reply['seed']}")
        done = 0
        while True:
            ev = client.next_event(timeout=3600, match=lambda e: e.data.get("job") == job)
            if ev.name == events.JOB_PROGRESS:
                bar.total = max(bar.total, ev.data["total"])
                done += 1
                bar.update(1)
            elif ev.name == events.JOB_RESULT:
                bar.close()
                layers = ev.data["layers"]
                break
            elif ev.name in (events.JOB_FAILED, events.JOB_CANCELED):
                bar.close()
                err = ev.data.get("error") or {"message": "canceled"}
                print(f"error: {err['message']}", file=sys.stderr)
                return 1
        out = Path(args.output)
        for i, layer in enumerate(layers):
            rgba = np.frombuffer(client.download(layer["sha256"]), np.uint8).reshape(layer["h"], layer["w"], 4)
            path = out if len(layers) == 1 else out.with_name(f"{out.stem}-{i + 1}{out.suffix}")
            Image.fromarray(rgba, "RGBA").save(path)
            print(path)
    except ProtocolError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        w, h = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise SystemExit(f"error: --size takes N or WxH, got {text!r}") from None
    return w, h


def register(sub):
    p = sub.add_parser("generate", help="generate an image with a running engine")
    p.add_argument("prompt")
    p.add_argument("-o", "--output", required=True, help="PNG file (with --batch: numbered)")
    p.add_argument("--model", help="model name (default: the first one)")
    p.add_argument("--size", type=_size, default=(512, 512), help="N or WxH, multiples of 8 (512)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--negative", default="")
    p.add_argument("--scheduler", default="euler", help='sampler: an id or A1111 label, e.g. "DPM++ 2M Karras"')
    p.add_argument("--schedule", help="default | karras | trailing")
    p.add_argument("--clip-skip", type=int, help="1 = the model's standard text-encoder layer, 2 = one earlier")
    p.add_argument("--vae", help="a registered VAE to decode (and encode) with instead of the model's")
    p.add_argument("--url", help="engine URL (default ws://127.0.0.1:PORT/v1/ws)")
    p.add_argument("--port", type=int, default=9180)
    p.add_argument("--token", help="token (default: $PAINTBRIDGE_TOKEN, or minted from the local data dir)")
    p.add_argument("--data-dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_generate)
