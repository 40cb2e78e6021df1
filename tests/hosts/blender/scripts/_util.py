"""Helpers for scripts that drive the Paintbridge add-on inside Blender."""

import importlib
import time


def addon(module_name):
    """The add-on package and its modules by role: A.controller, A.host, A.settings, A.panels, A.workflow_form."""
    import types

    pkg = importlib.import_module(module_name)
    roles = ("controller", "host", "settings", "panels", "workflow_form")
    return pkg, types.SimpleNamespace(**{r: importlib.import_module(f"{module_name}.{r}") for r in roles})


def vendored(module_name, name):
    """A module of the add-on's private bundle, e.g. vendored(ADDON_MODULE, "protocol.pixels")."""
    return importlib.import_module(f"{module_name}._vendor.{name}")


def pump(ctl, until, timeout=60.0, what="condition"):
    """Call the controller's drain() (timers do not fire under -b) until until() is true."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ctl.drain()
        if until():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; state={ctl.STATE}")


def ui_wait(ctl, cond, timeout, what, every=0.05):
    """For a script run with Blender's UI (gui=True, STEPS): hand the event loop back every `every` s (the
    add-on's own timer drains meanwhile) until cond() is true."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}; state={ctl.STATE}"
        yield every


def image_editor_area():
    """The factory layout has no Image Editor: the biggest area (the 3D viewport) becomes one, as a user would
    make it. Returns (window, area)."""
    import bpy

    win = bpy.context.window_manager.windows[0]
    area = max(win.screen.areas, key=lambda a: a.width * a.height)
    area.type = "IMAGE_EDITOR"
    return win, area


def connect_stored(ctl, sett, win, area, url, token):
    """Connect through the add-on's operator with the token in the store, as if signed in earlier."""
    import bpy

    sett.prefs().server = url
    ctl.get_session().tokens.set(url, token)
    with bpy.context.temp_override(window=win, area=area):
        assert "FINISHED" in bpy.ops.paintbridge.connect()


def pattern(w, h):
    """Top-down RGBA bytes, every pixel different, alpha varying (never 0 so colours are defined)."""
    out = bytearray()
    for y in range(h):
        for x in range(w):
            out += bytes(((x * 37 + y * 11) % 256, (y * 53 + 7) % 256, (x * y * 13 + 91) % 256, 40 + (x * 7 + y * 5) % 216))
    return bytes(out)


class FakeLayout:
    """Stands in for bpy.types.UILayout, since nothing is drawn under -b: a panel's draw() runs against it, and
    every property, operator and UIList it names must exist. Labels are recorded in `log`."""

    def __init__(self, log=None):
        self.log = [] if log is None else log

    def _child(self, *args, **kw):
        return FakeLayout(self.log)

    row = column = box = split = column_flow = _child

    def label(self, text="", icon="NONE", icon_value=0):
        self.log.append(text)

    def separator(self, **kw):
        pass

    def prop(self, data, prop, **kw):
        assert prop in data.bl_rna.properties, f"{data!r} has no property {prop!r}"
        getattr(data, prop)

    def prop_search(self, data, prop, search_data, search_prop, **kw):
        self.prop(data, prop)
        assert search_prop in search_data.bl_rna.properties

    def _op_rna(self, idname):
        import bpy

        mod, name = idname.split(".")
        return getattr(getattr(bpy.ops, mod), name).get_rna_type()

    def operator(self, idname, **kw):
        return _FakeOpProps(self._op_rna(idname))

    def operator_menu_enum(self, idname, prop, **kw):
        assert prop in self._op_rna(idname).properties, (idname, prop)

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **kw):
        import bpy

        assert hasattr(bpy.types, list_type), list_type
        self.prop(data, prop)
        self.prop(active_data, active_prop)

    def template_icon(self, icon_value=0, scale=1.0):
        pass


class _FakeOpProps:
    def __init__(self, rna):
        object.__setattr__(self, "_rna", rna)

    def __setattr__(self, name, value):
        assert name in self._rna.properties, f"operator {self._rna.identifier} has no property {name!r}"


def draw_panels(ui_module, context, names):
    """Run the named panels' draw() against a FakeLayout; returns the labels drawn."""
    import types

    log = []
    for name in names:
        cls = getattr(ui_module, name)
        if hasattr(cls, "poll") and not cls.poll(context):
            continue
        fake = types.SimpleNamespace(layout=FakeLayout(log), **{k: getattr(cls, k) for k in dir(cls)
                                                                if k.startswith("draw_")})
        cls.draw(fake, context)
    return log
