"""Sampler names people know (A1111 labels, ComfyUI names) and the noise schedules. Pure Python, no torch.

`scheduler` takes an id below, its A1111 label ("DPM++ 2M Karras") or a ComfyUI sampler name
("euler_ancestral", "uni_pc"); `resolve` turns any of them into (id, schedule). `schedule` is "default" (the
model's own timestep spacing), "karras" (Karras et al. sigmas) or "trailing" (ComfyUI's sgm_uniform: timesteps
spaced from the end, what few-step and v-prediction models want). engine/diffusion.py builds the diffusers
scheduler; FLUX always uses its flow-matching Euler.
"""

from __future__ import annotations

# id -> A1111 label. Ids ending in _karras are the same sampler with the karras schedule.
SAMPLERS = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "heun": "Heun",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_2m_sde_karras": "DPM++ 2M SDE Karras",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_sde_karras": "DPM++ SDE Karras",
    "ddim": "DDIM",
    "unipc": "UniPC",
    "lcm": "LCM",
    "tcd": "TCD",
}
SCHEDULES = ("default", "karras", "trailing")
# Samplers whose diffusers scheduler takes Karras sigmas.
KARRAS_OK = {"euler", "heun", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "unipc"}
_ALIASES = {"euler_ancestral": "euler_a", "uni_pc": "unipc", "uni_pc_bh2": "unipc", "k_euler": "euler",
            "k_euler_a": "euler_a", "k_heun": "heun", "sgm_uniform": "trailing", "normal": "default",
            "simple": "default"}


def _key(name: str) -> str:
    k = name.strip().lower().replace("++", "pp").replace("+", "p").replace("-", "_").replace(" ", "_")
    return _ALIASES.get(k, k)


def normalize(name: str) -> str:
    """The id for a sampler id, A1111 label or ComfyUI name; ValueError (listing the choices) if unknown."""
    if not isinstance(name, str):
        raise ValueError(f"scheduler must be a string, got {type(name).__name__}")
    k = _key(name)
    if k not in SAMPLERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SAMPLERS.values())} "
                         f"(or the ids {', '.join(SAMPLERS)})")
    return k


def normalize_schedule(name: str) -> str:
    k = _key(name or "default")
    if k not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)} (sgm_uniform = trailing)")
    return k


def resolve(scheduler: str, schedule: str = "default") -> tuple[str, str]:
    """(base sampler id without _karras, schedule) for a scheduler name and a schedule."""
    sid, sched = normalize(scheduler), normalize_schedule(schedule)
    if sid.endswith("_karras"):
        sid, sched = sid.removesuffix("_karras"), "karras"
    if sched == "karras" and sid not in KARRAS_OK:
        raise ValueError(f"the karras schedule does not apply to {SAMPLERS[sid]}; use default or trailing")
    return sid, sched


def schedules_for(sid: str) -> list[str]:
    """The schedules a sampler id takes (an id ending in _karras has its schedule built in)."""
    if sid.endswith("_karras"):
        return ["karras"]
    return [s for s in SCHEDULES if s != "karras" or sid in KARRAS_OK]


def public() -> dict:
    """What nodes.list tells clients: samplers with their labels and the schedules each takes, and the
    schedules."""
    return {"samplers": [{"id": k, "label": v, "schedules": schedules_for(k)} for k, v in SAMPLERS.items()],
            "schedules": list(SCHEDULES)}
