# Runs inside Krita (see krita_host.py, documents=[a 64x64 PNG]): the docker's Live tab. Live mode on, three
# paint changes (each ends the way a brush stroke does: pixels change, then the canvas gets the button release),
# a result for each; Apply adds one layer in one undo step; Stop leaves nothing queued or running (the pytest side
# asks the engine). The main thread's longest stall while live mode runs is recorded.
import os
import sys
import time

from krita import Krita
from PyQt5.QtCore import QEvent, QPoint, QPointF, Qt
from PyQt5.QtGui import QMouseEvent
from PyQt5.QtWidgets import QApplication

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402
from pattern import pattern_bgra as pattern  # noqa: E402

P = kutil.params()
R = {"ok": False}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the test driver)
messages = []
ctl.message.connect(messages.append)


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what, messages)


def count_nodes(node):
    return sum(1 + count_nodes(c) for c in node.childNodes())


class DrainClock:
    """The plug-in's own main-thread time: its timer's drain (updates, live tick, the canvas copy for a request)."""

    def __init__(self):
        self.max_ms, self.total_ms, self.calls = 0.0, 0.0, 0
        ctl.timer.timeout.disconnect()
        ctl.timer.timeout.connect(self.drain)
        self.parts = {}   # part -> longest ms: where the plug-in's time goes
        for name in ("tick", "handle", "_read"):
            self._time(ctl.live, name)
        self._time(ctl.live.live, "read", "read (canvas copy)")
        self._time(ctl.live.live, "handle", "live.handle (state)")
        self._time(dk.live_tab, "_draw", "Live tab redraw")

    def _time(self, obj, name, label=None):
        fn = getattr(obj, name)

        def timed(*a):
            t = time.perf_counter()
            try:
                return fn(*a)
            finally:
                ms = (time.perf_counter() - t) * 1000
                key = label or name
                top = self.parts.setdefault(key, [])
                top.append(round(ms, 1))
                top.sort(reverse=True)
                del top[5:]
        setattr(obj, name, timed)

    def drain(self):
        t = time.perf_counter()
        ctl.drain()
        ms = (time.perf_counter() - t) * 1000
        self.max_ms, self.total_ms, self.calls = max(self.max_ms, ms), self.total_ms + ms, self.calls + 1


def release_on_canvas():
    """What Krita's canvas receives when a stroke ends."""
    for w in ctl.live._watched:
        ev = QMouseEvent(QEvent.MouseButtonRelease, QPointF(5, 5), Qt.LeftButton, Qt.NoButton, Qt.NoModifier)
        QApplication.sendEvent(w, ev)


try:
    W = H = 64
    doc = app.activeDocument()
    assert doc is not None, "the start-up document is not open"
    node = doc.activeNode()
    assert node is not None, "no active layer"
    node.setPixelData(pattern(W, H), 0, 0, W, H)
    doc.refreshProjection()
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")
    ctl.form.model = P["model"]
    dk = kutil.docker(app)
    tab = dk.live_tab
    dk.tabs.setCurrentWidget(tab)
    tab.prompt.setPlainText("a live fox")
    tab.strength.setValue(0.5)
    live = ctl.live.live
    ticker = kutil.Ticker()
    ticker.start()   # the baseline: the same wait with live mode off (this machine's own noise)
    kutil.settle(3.0)
    R["stall_baseline_ms"] = ticker.stop()
    dk.live_tab.live.changed_state.disconnect()   # reconnected below through the timed _draw
    clock = DrainClock()
    dk.live_tab.live.changed_state.connect(dk.live_tab._draw)
    t0 = time.perf_counter()
    tab.start_btn.click()
    R["start_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    R["watched_canvases"] = len(ctl.live._watched)
    ticker.start()
    R["busy_shown"] = False

    def seen_busy():
        if live.busy and tab.busy.maximum() != 1:
            R["busy_shown"] = True
        return False

    pump(lambda: seen_busy() or live.result, 180, "the first live result")
    R["results"] = [live.result_job]
    R["stall_first_ms"] = ticker.stop()
    stalls = []
    # three paint changes, each a new result; the stall is measured while live mode works, not while this
    # script paints (setPixelData + refreshProjection are Krita's own work, as a brush stroke would be)
    for i in range(3):
        px = bytearray(node.pixelData(0, 0, W, H))
        for y in range(10 + 12 * i, 18 + 12 * i):
            for x in range(8, 56):
                px[(y * W + x) * 4:(y * W + x) * 4 + 4] = bytes([0, 200, 255, 255])
        node.setPixelData(bytes(px), 0, 0, W, H)
        doc.refreshProjection()
        release_on_canvas()
        sent = live.sent
        ticker.start()
        pump(lambda: seen_busy() or live.sent > sent, 30, f"change {i + 1} sent")
        pump(lambda: seen_busy() or (not live.busy and live.result_job not in R["results"]), 180,
             f"result of change {i + 1}")
        stalls.append(ticker.stop())
        R["results"].append(live.result_job)
        kutil.write(R)
    R["stall_ms"] = max(stalls)
    R["drain_max_ms"], R["drain_calls"] = round(clock.max_ms, 1), clock.calls
    R["drain_mean_ms"] = round(clock.total_ms / max(1, clock.calls), 2)
    R["drain_parts_ms"] = clock.parts   # the five longest calls of each part
    # what one redraw's pieces cost, repeated (the longest call above may be the machine, not the code)
    from PyQt5.QtGui import QImage, QPixmap
    px = live.result[0].pixels
    pieces = {}
    for name, fn in (("pixmap", lambda: QPixmap.fromImage(QImage(px.data, px.w, px.h, px.w * 4, QImage.Format_ARGB32))
                      .scaled(192, 192, Qt.KeepAspectRatio, Qt.SmoothTransformation)),
                     ("status text", lambda: tab.status.setText(f"Live: step {time.perf_counter()}")),
                     ("whole redraw", lambda: (setattr(tab, "_shown_job", None), tab._draw()))):
        times = []
        for _ in range(20):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        pieces[name] = [round(min(times), 2), round(sorted(times)[10], 2), round(max(times), 2)]
    R["redraw_pieces_ms"] = pieces   # min, median, max of 20
    R["sent"], R["changes_seen"] = live.sent, ctl.live.changes_seen
    R["shown_pixmap"] = tab.result.pixmap() is not None and not tab.result.pixmap().isNull()
    R["status_line"] = tab.status.text()

    # Apply: one layer, one undo step
    before = count_nodes(doc.rootNode())
    assert tab.apply_btn.isEnabled()
    tab.apply_btn.click()
    doc.waitForDone()
    R["apply_added"] = count_nodes(doc.rootNode()) - before   # the layer (and the Paintbridge group, the first time)
    group = [n for n in doc.rootNode().childNodes() if n.name() == "Paintbridge"]
    R["apply_layers"] = [n.name() for n in group[0].childNodes()] if group else []
    app.action("edit_undo").trigger()
    doc.waitForDone()
    kutil.settle(0.3)
    R["after_one_undo"] = count_nodes(doc.rootNode()) - before
    app.action("edit_redo").trigger()
    doc.waitForDone()
    kutil.settle(0.3)

    # Stop while a change is on its way: nothing is left
    px = bytearray(node.pixelData(0, 0, W, H))
    px[0:4 * W * 8] = bytes([255, 0, 0, 255]) * (W * 8)
    node.setPixelData(bytes(px), 0, 0, W, H)
    doc.refreshProjection()
    release_on_canvas()
    sent = live.sent
    pump(lambda: live.sent > sent, 30, "the last change sent")
    pump(lambda: live.busy and any(r.job for r in ctl.session.jobs.active(live=True)), 30,
         "the last change accepted")
    tab.start_btn.click()   # Stop
    pump(lambda: not live.busy, 60, "live mode stopped")
    R["state_after_stop"] = live.state
    R["button_after_stop"] = tab.start_btn.text()
    kutil.settle(1.0)
    R["sent_after_stop"] = live.sent - sent
    R["messages"] = messages[-5:]
    R["ok"] = True
except Exception:
    import traceback

    R["error"] = traceback.format_exc()
    R["messages"] = messages[-5:]
kutil.write(R)
