"""`paintbridge worker`: make this machine part of a Paintbridge worker pool (a Ray node).

`--head` starts the cluster's head node (on the engine's machine, or any machine the others reach); `--address
HEAD:PORT` joins one. Each GPU of the machine (`--gpus`, default: all Ray finds) becomes a place for one pool
worker; the engine (`paintbridge serve --ray-address HEAD:PORT`) deploys the workers there itself. This is
`ray start` with Paintbridge's choices (no dashboard, the node's private address); it returns once the node is
up, and `paintbridge worker --stop` (or `ray stop`) stops it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def cmd_worker(args) -> int:
    ray = shutil.which("ray", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if ray is None:
        print("error: Ray is not installed: pip install 'paintbridge[ray]'", file=sys.stderr)
        return 2
    if args.stop:
        return subprocess.call([ray, "stop"])
    if bool(args.head) == bool(args.address):
        print("error: give --head (start a cluster) or --address HEAD:PORT (join one)", file=sys.stderr)
        return 2
    from ..pool import ray_token_auth   # only for this command: engine.pool brings the queue with it

    cmd = [ray, "start", "--disable-usage-stats"]
    if args.head:   # Ray refuses dashboard options on a node that joins: they are the head's
        cmd += ["--head", f"--port={args.port}", "--include-dashboard=false"]
    else:
        cmd += [f"--address={args.address}"]
        ray_token_auth()   # joining: Ray sends the cluster's token only in token mode
    if args.gpus is not None:
        cmd.append(f"--num-gpus={args.gpus}")
    if args.node_ip:
        cmd.append(f"--node-ip-address={args.node_ip}")
    rc = subprocess.call(cmd)
    if args.head and rc == 0:
        ray_token_auth(dict(os.environ))   # the token `ray start --head` wrote: owner-only
    return rc


def register(sub):
    p = sub.add_parser("worker", help="make this machine a node of a worker pool (Ray)")
    p.add_argument("--head", action="store_true", help="start the pool's head node here")
    p.add_argument("--address", metavar="HEAD:PORT", help="join the pool whose head node is at HEAD:PORT")
    p.add_argument("--port", type=int, default=6379, help="the head node's port (default 6379)")
    p.add_argument("--gpus", type=int, help="GPUs this machine offers (default: all; on a CPU-only machine, N "
                                            "gives N CPU workers for trying it)")
    p.add_argument("--node-ip", metavar="ADDR", help="this machine's address on the private network")
    p.add_argument("--stop", action="store_true", help="stop the Ray node on this machine")
    p.set_defaults(func=cmd_worker)
