"""What the docker remembers across Krita restarts: the server, the user name and the last form values, in
Krita's own settings (kritarc). Never a password or a token: the Session's TokenStore keeps tokens."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from krita import Krita
from PyQt5.QtCore import QStandardPaths

from ._vendor.protocol import default_url
from ._vendor.protocol.generate import RANDOM

GROUP = "paintbridge"   # kritarc section


@dataclass
class Form:
    """What the person typed."""

    url: str = field(default_factory=default_url)
    username: str = ""
    model: str = ""
    prompt: str = ""
    negative: str = ""
    mode: str = "txt2img"
    source: str = "composite"
    strength: float = 0.6
    steps: int = 20
    guidance: float = 7.0
    seed: int = RANDOM      # negative: random (the seed used is shown once the job is accepted)
    batch: int = 1
    upscaler: str = ""      # Upscale: an upscaler model, "" for a plain (Lanczos) resize
    scale: float = 2.0
    refine: bool = False    # Upscale: then refine with the model, in tiles
    refine_strength: float = 0.3
    lora: str = ""          # a LoRA applied to the model, "" for none
    lora_weight: float = 0.8
    scheduler: str = "euler"    # the engine's pickers (protocol.generate): sampler id, schedule, clip skip,
    schedule: str = "default"   # and a VAE instead of the model's own ("" = the model's)
    clip_skip: int = 1
    vae: str = ""
    extend_left: int = 0    # Outpaint: grow the canvas by these margins first
    extend_top: int = 0
    extend_right: int = 0
    extend_bottom: int = 0

    def load(self):
        app = Krita.instance()
        for name, value in vars(self).items():
            raw = app.readSetting(GROUP, name, "")
            if raw == "":
                continue
            try:
                setattr(self, name, raw == "True" if isinstance(value, bool) else type(value)(raw))
            except ValueError:
                pass

    def save(self):
        app = Krita.instance()
        for name, value in vars(self).items():
            app.writeSetting(GROUP, name, str(value))

    def values(self) -> dict:
        """The form as protocol.generate field values (FIELDS names)."""
        return {"model": self.model, "prompt": self.prompt, "negative_prompt": self.negative, "steps": self.steps,
                "guidance": self.guidance, "seed": self.seed, "batch": self.batch, "lora": self.lora,
                "lora_weight": self.lora_weight, "strength": self.strength, "scale": self.scale,
                "upscaler": self.upscaler, "scheduler": self.scheduler, "schedule": self.schedule,
                "clip_skip": self.clip_skip, "vae": self.vae, "refine": self.refine,
                "refine_strength": self.refine_strength}

    def set_values(self, values: dict):
        """protocol.generate field values (recalled_fields) back into the form; wrong types are skipped."""
        names = {"negative_prompt": "negative"}
        for key, value in values.items():
            attr = names.get(key, key)
            if value is None or not hasattr(self, attr) or attr in ("url", "username"):
                continue
            try:
                setattr(self, attr, type(getattr(self, attr))(value))
            except (TypeError, ValueError):
                pass


def config_dir() -> str:
    base = QStandardPaths.writableLocation(QStandardPaths.GenericConfigLocation) or os.path.expanduser("~/.config")
    return os.path.join(base, "paintbridge-krita")
