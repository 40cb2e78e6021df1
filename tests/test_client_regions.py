"""protocol/generate's regions (pure: no engine): generate's `regions` from a host's regions, the checks a host
can make before sending, errors beside the regions panel, and regions read back from a recalled image."""

from __future__ import annotations

import pytest

from protocol import forms
from protocol import generate as g
from protocol.limits import Limits
from protocol.pixels import Pixels, alpha_of

FORM = {"model": "tiny-sd15", "prompt": "oil painting", "negative_prompt": "", "steps": 4, "guidance": 5.0,
        "seed": 7, "width": 64, "height": 64}


def mask(x=0, y=0, w=4, h=2, value=255):
    return Pixels(bytes([value]) * (w * h), w, h, "gray8", x, y)


def test_regions_travel_with_their_masks():
    layer = Pixels(bytes([9, 9, 9, 0, 9, 9, 9, 255]), 2, 1, "rgba8", 10, 20)
    knight = Pixels(alpha_of(layer.data), 2, 1, "gray8", 10, 20)   # a region's mask from its layer's alpha
    later = (lambda: mask(5, 6))                                    # or a callable the Session runs off-thread
    args = g.generate_args("txt2img", FORM, regions=[{"prompt": "a knight", "mask": knight},
                                                     {"prompt": "", "negative_prompt": "fog", "mask": later}])
    assert args["regions"] == [{"prompt": "a knight", "mask": knight},
                               {"prompt": "", "negative_prompt": "fog", "mask": later}]
    assert knight.data == bytes([0, 255])
    assert "regions" not in g.generate_args("txt2img", FORM)
    assert "regions" not in g.generate_args("txt2img", FORM, regions=[])


def test_bad_regions_are_refused_before_sending():
    cases = [({"regions": [{"prompt": "a", "mask": mask()}] * 3, "limits": Limits(max_regions=2)}, "at most 2"),
             ({"regions": [{"prompt": "a", "mask": mask()}, {"prompt": " ", "mask": mask()}],
               "values": dict(FORM, prompt="")}, "region 1: its prompt is empty"),
             ({"regions": [{"prompt": "a", "mask": Pixels(bytes(32), 4, 2, "rgba8")}]}, "gray8"),
             ({"regions": [{"prompt": "a"}]}, "region 0: no mask"),
             ({"regions": [{"prompt": "a", "mask": mask()}], "mode": "upscale"}, "upscale")]
    for kw, words in cases:
        mode, values = kw.pop("mode", "txt2img"), kw.pop("values", FORM)
        with pytest.raises(g.FieldError, match=words) as e:
            g.generate_args(mode, values, **kw)
        assert e.value.field == g.REGIONS


def test_region_errors_belong_beside_the_regions():
    assert g.error_field({"field": "regions.1.prompt", "region": 1}) == "regions"
    assert g.error_field({"field": "regions", "region": None}) == "regions"
    assert g.error_field({"fields": [{"field": "regions.0.mask.w", "problem": "x"}]}) == "regions"
    assert Limits.from_wire({"max_regions": 4}).max_regions == 4 and Limits().max_regions == 10


def test_recalled_regions_come_back_with_the_engines_mask_references():
    ref = {"sha256": "ab" * 32, "w": 4, "h": 2, "format": "gray8", "x": 3, "y": 1}
    params = {"mode": "txt2img", "prompt": "oil painting", "seed": 3,
              "regions": [{"prompt": "a knight", "negative_prompt": None, "mask": ref}]}
    values = forms.recalled(params)
    assert g.recalled_regions(values) == [{"prompt": "a knight", "negative_prompt": "", "mask": ref}]
    fields, notes = g.recalled_fields(values)
    assert "regions" not in fields and fields["prompt"] == "oil painting" and not notes   # no widget holds them
    assert g.recalled_regions(forms.recalled({"mode": "txt2img", "prompt": "x"})) == []
