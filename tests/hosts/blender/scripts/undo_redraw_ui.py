"""With Blender's UI and event loop running (run_in_blender(gui=True)): issue 15 item 6 as a person sees it. A
Refine with "Replace active image" writes into the image shown in the Image Editor; Ctrl+Z (ed.undo) and
Ctrl+Shift+Z (ed.redo) must change what the Image Editor draws, not only the image's data. What it draws is read
back from a screenshot of the area after Blender redrew it: the source is pure green, the result is not. (The
first screenshot, before anything changed, shows that this way of looking works.)

PARAMS: url, token, model.
"""

import os

import bpy
from _util import addon, ui_wait, image_editor_area, connect_stored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett = A.controller, A.host, A.settings
R = RESULT
url, token, model = PARAMS["url"], PARAMS["token"], PARAMS["model"]
W, H = 64, 48
GREEN = (0.0, 1.0, 0.0, 1.0)


def wait(cond, timeout, what):
    return ui_wait(ctl, cond, timeout, what)


def drawn(win, area, tag):
    """The colour the Image Editor draws inside the image, from a screenshot of the area."""
    path = os.path.join(bpy.app.tempdir, f"pb-shot-{tag}.png")
    with bpy.context.temp_override(window=win, area=area):
        bpy.ops.screen.screenshot_area(filepath=path)
    main = [r for r in area.regions if r.type == "WINDOW"][0]
    # a point of the image fitted into the main region, left of the middle, where Blender's start-up splash (which
    # stays up: nobody clicks it away) does not cover it; in the area's screenshot (rows bottom-up, as in Blender)
    cx = main.x - area.x + main.width // 5
    cy = main.y - area.y + main.height // 2
    shot = bpy.data.images.load(path, check_existing=False)
    try:
        i = 4 * (cy * shot.size[0] + cx)
        rgb = shot.pixels[i:i + 3]
    finally:
        bpy.data.images.remove(shot)
        os.remove(path)
    return [round(v * 255) for v in rgb]


def is_green(rgb):
    return rgb[0] < 40 and rgb[1] > 215 and rgb[2] < 40


def settle_redraw(win):
    for _ in range(6):    # timer ticks: the window redraws in between
        yield 0.1


def steps():
    win, area = image_editor_area()
    bpy.context.scene.view_settings.view_transform = "Standard"   # drawn colours = the image's sRGB values
    src = bpy.data.images.new("pb-green", W, H, alpha=True)
    src.pixels.foreach_set(GREEN * (W * H))
    src.pack()
    area.spaces.active.image = src
    with bpy.context.temp_override(window=win, area=area, region=[r for r in area.regions if r.type == "WINDOW"][0]):
        bpy.ops.image.view_all(fit_view=True)
    yield from settle_redraw(win)
    R["before"] = drawn(win, area, "before")

    connect_stored(ctl, sett, win, area, url, token)
    yield from wait(lambda: ctl.STATE["state"] == "connected" and bool(ctl.STATE["models"]), 60, "connected")
    st = bpy.context.scene.paintbridge
    st.model = model
    st.mode, st.prompt, st.steps, st.seed, st.strength = "REFINE", "noise", 2, 5, 1.0
    st.replace_active = True
    n0 = len(ctl.STATE["results"])
    with bpy.context.temp_override(window=win, area=area):
        assert "FINISHED" in bpy.ops.paintbridge.generate()
    yield from wait(lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 240, "the result")
    assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
    R["replaced_in_place"] = ctl.STATE["results"][-1] == "pb-green"
    yield from settle_redraw(win)
    R["after_replace"] = drawn(win, area, "replace")

    with bpy.context.temp_override(window=win, area=area):
        bpy.ops.ed.undo()
    yield from settle_redraw(win)
    R["after_undo"] = drawn(win, area, "undo")
    img = bpy.data.images["pb-green"]
    R["data_after_undo_green"] = is_green([round(v * 255) for v in img.pixels[0:3]])
    # did the add-on's undo handler see the change (its REV against the one it applied)?
    R["rev_after_undo"] = [img.get(host.REV), host._applied_revs.get(img.get(host.UID))]

    # control: with no image in the editor, the screenshot must change too (it shows what is drawn now)
    space = area.spaces.active
    space.image = None
    yield from settle_redraw(win)
    R["editor_empty"] = drawn(win, area, "empty")
    space.image = bpy.data.images["pb-green"]
    yield from settle_redraw(win)
    R["shown_again"] = drawn(win, area, "again")

    with bpy.context.temp_override(window=win, area=area):
        bpy.ops.ed.redo()
    yield from settle_redraw(win)
    R["after_redo"] = drawn(win, area, "redo")
    R["green"] = {k: is_green(R[k]) for k in ("before", "after_replace", "after_undo", "after_redo")}


STEPS = steps()
