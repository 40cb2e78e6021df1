#!/usr/bin/env python3
"""Cancels a plug-in run's engine job when GIMP ends the run: GIMP's own Cancel (the status bar's or the progress
bar's, also on Ctrl+F repeat runs) kills the plug-in process outright (gimp_plug_in_close with kill), so the
plug-in cannot cancel anything itself.

The controller starts this small process (its own session, so the kill does not reach it) before it sends the
request, and writes JSON lines on its stdin: {"url", "token", "match"} first, {"job"} once the job has an id,
{"done": true} when the job has ended or the run is over. The token travels only through this private pipe (never
argv or the environment). When stdin closes without "done", the plug-in died: this process sends job.cancel for
the job and exits.

A Cancel in the first instant kills the plug-in before it knows the job's id (the request id it holds means nothing
on another connection). Then the job is found among the user's queued and running jobs by what was sent: "match"
holds request fields (a generate's client-picked random seed, prompt and mode; a workflow's name) that the job's
recorded request must have. The request may still be on its way, so the list is asked a few times.
"""

import json
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.join(_HERE, "_vendor"), os.path.normpath(os.path.join(_HERE, "..", "..", ".."))):
    if os.path.isdir(os.path.join(_p, "protocol")) and _p not in sys.path:
        sys.path.insert(0, _p)
        break


def main() -> int:
    info = {}
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("done"):
            return 0
        info.update(msg)
    if not info.get("url") or not (info.get("job") or info.get("match")):
        return 0
    from protocol.client import Client

    client = Client(info["url"], info.get("token"), app="gimp", app_version="job guard", reconnect=False)
    try:
        client.connect(timeout=30)
        job = info.get("job") or find_job(client, info["match"])
        if job:
            client.call("job.cancel", {"job": job}, timeout=30)
    except Exception as exc:  # noqa: BLE001 - nobody is left to tell but stderr (GIMP's console)
        sys.stderr.write(f"paintbridge: could not cancel job {info.get('job') or info.get('match')}: {exc}\n")
        return 1
    finally:
        client.close()
    return 0


def matches(request, match: dict) -> bool:
    """Every field of match is in request with the same value (a dict field: the same for its own fields)."""
    if not isinstance(request, dict):
        return False
    return all(matches(request.get(k), v) if isinstance(v, dict) else request.get(k) == v for k, v in match.items())


def find_job(client, match: dict, tries: int = 10, wait: float = 0.3):
    """The newest queued or running job of this user whose request has the match's fields; None when none shows up
    (the request never reached the engine)."""
    for i in range(tries):
        for status in ("queued", "running"):
            for job in client.call("job.list", {"status": status, "limit": 50}, timeout=30)["jobs"]:
                if matches(job.get("request"), match):
                    return job["job"]
        time.sleep(wait)
    return None


if __name__ == "__main__":
    sys.exit(main())
