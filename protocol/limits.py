"""The engine's limits, as `hello` / `auth.login` report them (SPEC §4), for checks before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. The defaults are the engine's own defaults, used until a hello reply
    says otherwise (an older engine that sends no limits keeps them)."""

    frame_limit: int = 16 * 1024 * 1024
    max_blob_size: int = 2048 * 1024 * 1024
    max_pixels: int = 16 * 1024 * 1024     # width*height of one generation
    max_steps: int = 200
    max_batch: int = 16
    max_regions: int = 10                  # regions in one generate
    max_controls: int = 8                  # controls + references in one generate

    @classmethod
    def from_wire(cls, raw) -> "Limits":
        """hello's "limits" map; unknown keys are ignored, missing or malformed ones keep the default."""
        if not isinstance(raw, dict):
            return cls()
        known = {}
        for name in cls.__dataclass_fields__:
            value = raw.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                known[name] = value
        return cls(**known)
