# Runs inside GIMP (python-fu-eval) after _prelude.py: live mode's GIMP side (live.GimpLive, the plug-in's own
# module, imported here) on a real image: the marker notices paint changes made to the image, each burst sends one
# live request, results arrive, Apply adds one layer in one undo group, Stop leaves nothing on the engine.
import time
W, H = 64, 48
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, opaque(pattern(W, H, 1)))
# Live needs its window: from a script it is a calling error, and nothing is sent
OUT["script_live"] = run("paintbridge-live", img, [base], server_url=os.environ["PB_URL"])
HERE = os.path.join(Gimp.directory(), "plug-ins", "paintbridge")
for p in (os.path.join(HERE, "_vendor"), HERE):
    sys.path.insert(0, p)
import controller as pbc, live as pbl

ctl = pbc.Controller(False, os.environ["PB_URL"], "Paintbridge: live")
ctl.connect(os.environ["PAINTBRIDGE_TOKEN"])
gl = pbl.GimpLive(ctl, img, os.environ["PB_MODEL"], prompt="live fox", strength=0.5)

def spin(until, timeout=120):
    """GIMP-side loop as the window's: step() every 50 ms until until() or timeout."""
    loop = GLib.MainLoop()
    deadline = time.monotonic() + timeout
    def tick():
        gl.step()
        if until() or time.monotonic() > deadline:
            loop.quit()
            return False
        return True
    GLib.timeout_add(50, tick)
    loop.run()
    return until()

def paint(i, layer=None):
    """A stroke: a small block of colour on a layer (the base one unless given), through its buffer, as a tool
    would."""
    layer = layer or base
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(4 + 6 * i, 4, 5, 5), RGBA, bytes([200, 30 * i, 40, 255]) * 25)
    buf.flush()
    layer.update(4 + 6 * i, 4, 5, 5)

results = []
gl.start()
OUT["first"] = spin(lambda: gl.live.result_job is not None)
results.append(gl.live.result_job)
OUT["idle_changes"] = gl.changes_seen      # nothing painted yet: the marker stays the same
for i in range(3):
    paint(i)
    before = gl.live.result_job
    OUT[f"change{i}"] = spin(lambda: gl.live.result_job not in (None, before))
    results.append(gl.live.result_job)
OUT["results"] = results
OUT["changes_seen"] = gl.changes_seen
OUT["sent"] = gl.live.sent
OUT["marker_ms"] = [round(1000 * min(gl.marker_s), 3), round(1000 * max(gl.marker_s), 3),
                    round(1000 * sum(gl.marker_s) / len(gl.marker_s), 3), len(gl.marker_s)]
n_layers = len(img.get_layers())
placed = gl.apply()
OUT["applied"] = placed
OUT["layers_added"] = len(img.get_layers()) - n_layers
OUT["keep"] = spin(lambda: False, timeout=1.5)   # images.keep goes out on the worker
# a last change, then Stop at once: its job is canceled (or had finished), nothing is left queued or running
spin(lambda: not gl.live.busy, timeout=60)   # the applied layer is a change of its own: let it be sent and done
sent = gl.live.sent
paint(4, img.get_layers()[0])   # on the applied layer, which now covers the base: a visible change
# sent, not busy: on a fast machine this tiny job can be done between two 50 ms ticks
OUT["last_sent"] = spin(lambda: gl.live.sent > sent, timeout=10)
OUT["last_requests"] = dict(gl.live._mine)
gl.stop()
OUT["settled"] = gl.settle()
OUT["state_after_stop"] = gl.live.state
ctl.close()
