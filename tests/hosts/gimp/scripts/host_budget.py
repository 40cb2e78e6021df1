# Runs inside GIMP (python-fu-eval, with the GUI: run_batch(gui=True)) after _prelude.py, for the host benchmark
# (bench B9, issue 15 item 17). The plug-in's own modules (as installed) do what its Upscale procedure does - read
# the visible image, generate, place the result - in this plug-in process, with a 5 ms GLib timeout on the same main
# loop the plug-in's Controller.pump runs (its progress and Cancel live there): how long that loop stood still while
# a 3840x2160 layer was sent and its result came back; reading and placing are synchronous calls on that thread and
# are timed as they run. Env: PB_URL, PAINTBRIDGE_TOKEN, PB_REPS.
import time
PLUGIN = os.path.join(Gimp.directory(), "plug-ins", "paintbridge")
for p in (os.path.join(PLUGIN, "_vendor"), PLUGIN):
    sys.path.insert(0, p)
import controller, host, settings  # noqa: E402  (the installed plug-in's modules)
MS = 1000.0

class Ticker:
    def __init__(self, ctl):
        self.ctl, self.src = ctl, None
    def _tick(self):
        now = time.perf_counter()
        gap = now - self.last
        self.max_gap = max(self.max_gap, gap)
        if gap > 0.03:
            self.gaps.append((round(now - self.t0, 3), round(gap * MS, 1)))
        if self.sent is None and self.ctl.job is not None:
            self.sent, self.send_stall = now - self.t0, self.max_gap   # the engine has the job: the layer is sent
        self.last = now
        return True
    def start(self):
        self.t0 = self.last = time.perf_counter()
        self.max_gap, self.gaps, self.sent, self.send_stall = 0.0, [], None, None
        self.src = GLib.timeout_add(5, self._tick)
    def stop(self):
        GLib.source_remove(self.src)
        return round(self.max_gap * MS, 1)

def painted(w, h):
    img = Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
    layer = Gimp.Layer.new(img, "paint", w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    img.insert_layer(layer, None, 0)
    put(layer, bytes(range(256)) * (w * h * 4 // 256))
    return img, Gimp.Display.new(img)

def upscale(ctl, img, scale):
    out = {}
    t0 = time.perf_counter()
    src = host.read_visible(img, host.image_rect(img))
    out["read_ms"] = (time.perf_counter() - t0) * MS
    params = ctl.params("upscale", {"scale": scale, "upscaler": ""})
    ctl.job = None
    ticker.start()
    results = ctl.generate(params, src)
    out["loop_stall_ms"] = ticker.stop()
    out["send_stall_ms"] = max(out["read_ms"], ticker.send_stall or 0.0)
    out["receive_stall_ms"] = round(max(g for t, g in ticker.gaps if t > (ticker.sent or 0)) if [
        g for t, g in ticker.gaps if t > (ticker.sent or 0)] else 0.0, 1)
    out["gaps"], out["sent_s"] = ticker.gaps, ticker.sent
    t1 = time.perf_counter()
    new, layers = host.new_image(results, "Paintbridge upscale")
    shown = Gimp.Display.new(new)
    out["apply_new_image_ms"] = (time.perf_counter() - t1) * MS
    out["in_document_s"] = time.perf_counter() - t0
    out["result"] = [new.get_width(), new.get_height()]
    return out, results, shown

ctl = controller.Controller(False, os.environ["PB_URL"], "Paintbridge Upscale")
ctl.connect(settings.script_token())
ticker = Ticker(ctl)
ticker.start()
loop = GLib.MainLoop()
GLib.timeout_add(2000, lambda: loop.quit())
loop.run()
OUT["idle_stall_ms"] = ticker.stop()
OUT["gimp_version"] = Gimp.version()
OUT["runs"] = []
for i in range(int(os.environ.get("PB_REPS", "3")) + 1):   # the first run warms up
    run = {}
    big, shown = painted(3840, 2160)
    run["4k"], results, new = upscale(ctl, big, 1.0)
    new.delete()   # a display: the last one of its image deletes the image too
    t1 = time.perf_counter()
    host.place(big, results, "Paintbridge refine")   # the same 4K result as a layer (as Refine places one)
    run["4k"]["apply_layer_ms"] = (time.perf_counter() - t1) * MS
    Gimp.displays_flush()
    shown.delete()
    hd, shown = painted(1920, 1080)
    run["upscale"], results, new = upscale(ctl, hd, 2.0)
    new.delete()
    shown.delete()
    if i:
        OUT["runs"].append(run)
ctl.close()
