"""A network blip while a host app's job runs: the host talks to the engine through a TcpProxy (tests/proxy.py);
a thread here watches the engine, cuts the link as soon as one of the user's jobs is running, keeps it down until
the engine has finished that job (so its job.result goes to nobody), then restores it. What the host shows after
its own reconnect is then up to its plug-in (issue 15 item 2: resync the tracked jobs, never "running" forever).

    with CutWhileRunning(engine_server, client) as cut:   # client: the user the host signs in as
        run the host with cut.url
    cut.job, cut.finished_while_cut, cut.status
"""

from __future__ import annotations

import threading
import time

from ..proxy import TcpProxy

FINAL = ("completed", "failed", "canceled")


class CutWhileRunning:
    def __init__(self, engine, watcher, timeout: float = 300, down_after: float = 1.5):
        """watcher: a Client signed in as the host's user, straight to the engine (not through the proxy).
        down_after: how long the link stays down after the job finished, so the host sees the loss and retries."""
        host, _, port = engine.url.partition("://")[2].split("/", 1)[0].rpartition(":")
        self.proxy = TcpProxy(host, int(port))
        self.url = self.proxy.url(engine.url)
        self.watcher = watcher
        self.timeout = timeout
        self.down_after = down_after
        self.job = None                   # the job that ran while the link was cut
        self.status = None                # its status on the engine when the link came back
        self.finished_while_cut = False
        self.cut_at = self.restored_at = None
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.proxy.close()

    def _run(self):
        try:
            end = time.monotonic() + self.timeout
            while self.job is None:
                if self._stop.is_set() or time.monotonic() > end:
                    return
                running = [j for j in self.watcher.call("job.list", {"limit": 20})["jobs"] if j["status"] == "running"]
                if running:
                    self.proxy.cut()
                    self.cut_at = time.time()
                    self.job = running[0]["job"]
                else:
                    time.sleep(0.05)
            while True:
                got = self.watcher.call("job.get", {"job": self.job})
                if got["status"] in FINAL:
                    self.status = got["status"]
                    self.finished_while_cut = True
                    break
                if self._stop.is_set() or time.monotonic() > end:
                    break
                time.sleep(0.1)
            time.sleep(self.down_after)
        except Exception as exc:   # reported by the test, never silently lost
            self.error = repr(exc)
        finally:
            self.proxy.restore()
            self.restored_at = time.time()
