#!/usr/bin/env python3
"""Cancels a plug-in run's engine job when GIMP ends the run: GIMP's own Cancel (the status bar's or the progress
bar's, also on Ctrl+F repeat runs) kills the plug-in process outright (gimp_plug_in_close with kill), so the
plug-in cannot cancel anything itself.

The controller starts this small process (its own session, so the kill does not reach it) and writes JSON lines on
its stdin: {"url", "token", "job"} once the job has an id, {"done": true} when the job has ended or the run is
over. The token travels only through this private pipe (never argv or the environment). When stdin closes without
"done", the plug-in died: this process sends job.cancel for the job and exits.
"""

import json
import os
import sys

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
    if not info.get("job") or not info.get("url"):
        return 0
    from protocol.client import Client

    client = Client(info["url"], info.get("token"), app="gimp", app_version="job guard", reconnect=False)
    try:
        client.connect(timeout=30)
        client.call("job.cancel", {"job": info["job"]}, timeout=30)
    except Exception as exc:  # noqa: BLE001 - nobody is left to tell but stderr (GIMP's console)
        sys.stderr.write(f"paintbridge: could not cancel job {info['job']}: {exc}\n")
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
