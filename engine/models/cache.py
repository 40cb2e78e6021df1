"""Loaded models kept between jobs, in RAM and VRAM budgets, least recently used out first.

Everything that is loaded goes through here: main models (diffusers pipelines), LoRA weights, embeddings,
upscalers, ControlNets, T2I-Adapters, IP-Adapters and CLIP image encoders (a ControlNet stays loaded between jobs
like a main model). Each entry's size is its parameter (+ buffer) bytes, counted against the budget of the device it
lives on: `ram_budget_mb` for CPU, `vram_budget_mb` for the accelerator (config.toml; 0 = automatic: half of
physical RAM, 85% of the GPU's memory). Before a load, least recently used entries on that device are evicted
until the new one's estimate (its size on disk) fits; after the load, again by its measured size. One model
bigger than the whole budget is still loaded, alone. What the running job uses (`use`) is never evicted while it
runs, and a live job's model not for `hold_s` after it (live painting never reloads its model on every stroke
because a LoRA or another user's job made room); only when nothing else can go does a load exceed the budget.

A model whose file changed on disk is loaded again. `loads` counts real loads and `hits` cache hits (tests and
`models.list`'s "cache" show them). Used from the job worker thread (one job at a time); the lock only protects
the bookkeeping against readers on other threads (models.list, models.unload).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import events
from ..errors import ModelError
from .registry import ModelRegistry

log = logging.getLogger("paintbridge.models")
MiB = 1024 * 1024
# kinds that live on the accelerator (the others are CPU tensors put on a model for one job)
ON_DEVICE = ("main", "upscaler", "vae", "controlnet", "t2i_adapter", "clip_vision")


@dataclass
class _Slot:
    name: str
    kind: str
    value: Any
    size: int
    device: str          # "cpu" or "gpu" (which budget it counts against)
    sig: tuple


def module_bytes(*objs) -> int:
    """Parameter + buffer bytes of torch modules (each tensor counted once)."""
    import torch

    seen, total = set(), 0
    for obj in objs:
        if not isinstance(obj, torch.nn.Module):
            continue
        for t in list(obj.parameters()) + list(obj.buffers()):
            key = (t.data_ptr(), t.numel()) if t.device.type != "meta" else id(t)
            if key in seen:
                continue
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def value_size(value) -> int:
    import torch

    if isinstance(value, torch.nn.Module):   # ControlNet, T2I-Adapter, image encoder, VAE
        return module_bytes(value)
    pipe = getattr(value, "pipe", None)
    if pipe is not None:
        return module_bytes(*[c for c in pipe.components.values() if isinstance(c, torch.nn.Module)])
    desc = getattr(value, "descriptor", None)
    if desc is not None:
        return module_bytes(desc.model)
    tensors = getattr(value, "tensors", None)
    if isinstance(tensors, dict):
        return sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))
    return 0


def _device_kind(value) -> str:
    dev = getattr(value, "device", None)
    return "gpu" if dev is not None and getattr(dev, "type", "cpu") != "cpu" else "cpu"


def auto_ram_budget() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 * 1024 * MiB


def auto_vram_budget() -> int:
    try:
        import torch
        if torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory * 0.85)
    except Exception:
        pass
    return 0


class ModelCache:
    def __init__(self, registry: ModelRegistry, max_models: int | None = None,
                 on_event: Callable[[str, dict], None] | None = None, ram_budget_mb: int = 0,
                 vram_budget_mb: int = 0):
        self.registry = registry
        self.max_models = max_models
        self.on_event = on_event or (lambda name, data: None)
        self.budgets = {"cpu": ram_budget_mb * MiB if ram_budget_mb else auto_ram_budget(),
                        "gpu": vram_budget_mb * MiB if vram_budget_mb else auto_vram_budget()}
        self._loaded: "OrderedDict[str, _Slot]" = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0
        self.hits = 0
        self.evictions = 0
        self._in_use: dict[str, float] = {}   # name -> hold_s after the job: what the running job loaded
        self._held: dict[str, float] = {}     # name -> time.monotonic() until which it is not evicted

    # -- what the running job uses (the job queue's worker thread)
    def use(self, name: str, hold_s: float = 0.0) -> None:
        """The running job uses `name`: not evicted until `release`, nor for hold_s after it."""
        with self._lock:
            self._in_use[name] = max(self._in_use.get(name, 0.0), hold_s)

    def release(self) -> None:
        """The job ended (JobQueue, after every job)."""
        now = time.monotonic()
        with self._lock:
            for name, hold in self._in_use.items():
                if hold:
                    self._held[name] = now + hold
            self._in_use.clear()

    def _protected(self, name: str) -> bool:
        return name in self._in_use or self._held.get(name, 0.0) > time.monotonic()

    # -- public getters
    def get(self, name: str):
        """A main model (LoadedModel), loaded once and kept."""
        from .loader import load_model
        # The data dir's cache keeps what a checkpoint needs fetched once (FLUX's T5 tokenizer).
        cache_dir = Path(self.registry.install_dir).parent / "cache" if self.registry.install_dir else None
        return self._get(name, "main", lambda e: load_model(e.path, name=name, cache_dir=cache_dir))

    def get_vae(self, name: str, family: str, device=None, dtype=None):
        """A VAE from the registry, on the device/dtype of the model it will serve (kept like a model)."""
        from .loader import load_vae
        return self._get(name, "vae", lambda e: load_vae(e.path, family, device, dtype))

    def get_lora(self, name: str):
        from .patch import load_lora
        return self._get(name, "lora", lambda e: load_lora(e))

    def get_embedding(self, name: str):
        from .patch import load_embedding
        return self._get(name, "embedding", lambda e: load_embedding(e))

    def get_upscaler(self, name: str):
        from .upscale import load_upscaler
        return self._get(name, "upscaler", lambda e: load_upscaler(e.path, name))

    def get_controlnet(self, name: str, device=None, dtype=None):
        from .control import load_controlnet
        return self._get(name, "controlnet", lambda e: load_controlnet(e.path, e.family, device, dtype))

    def get_t2i_adapter(self, name: str, device=None, dtype=None):
        from .control import load_t2i_adapter
        return self._get(name, "t2i_adapter", lambda e: load_t2i_adapter(e.path, device, dtype))

    def get_ip_adapter(self, name: str):
        from .control import load_ip_adapter
        return self._get(name, "ip_adapter", lambda e: load_ip_adapter(e.path, name))

    def get_clip_vision(self, name: str, device=None, dtype=None):
        from .control import load_clip_vision
        return self._get(name, "clip_vision", lambda e: load_clip_vision(e.path, device, dtype))

    # -- machinery
    def _get(self, name: str, kind: str, loader):
        entry = self.registry.get(name, type=kind)
        sig = (str(entry.path), entry.size, entry.mtime)
        with self._lock:
            slot = self._loaded.get(name)
            if slot is not None and slot.kind == kind and slot.sig == sig:
                self._loaded.move_to_end(name)
                self.hits += 1
                return slot.value
        if slot is not None:   # changed on disk (or a different kind under that name): load it again
            self.unload(name)
        device = "cpu"
        if kind in ON_DEVICE:
            from .loader import pick_device
            device = "gpu" if pick_device()[0].type != "cpu" else "cpu"
        self._make_room(device, entry.size)
        try:
            value = loader(entry)
        except ModelError:
            raise
        except MemoryError:
            raise
        except Exception as e:
            if "out of memory" in str(e).lower():
                raise
            raise ModelError(f"cannot load {kind} {name!r}: {type(e).__name__}: {str(e)[:300]}") from e
        self.loads += 1
        size = value_size(value) or entry.size
        device = _device_kind(value) if kind in ON_DEVICE else "cpu"
        with self._lock:
            self._loaded[name] = _Slot(name, kind, value, size, device, sig)
        self._make_room(device, 0, keep=name)
        self.on_event(*events.model_loaded(name, kind, round(size / MiB, 1)))
        return value

    def _used(self, device: str) -> int:
        with self._lock:
            return sum(s.size for s in self._loaded.values() if s.device == device)

    def _make_room(self, device: str, need: int, keep: str | None = None):
        budget = self.budgets.get(device) or 0
        while True:
            with self._lock:
                victims = [s for s in self._loaded.values()
                           if s.name != keep and s.device == device and not self._protected(s.name)]
                mains = [s for s in self._loaded.values()
                         if s.name != keep and s.kind == "main" and not self._protected(s.name)]
                n_main = len(mains) + (1 if keep is None or self._loaded[keep].kind == "main" else 0)
                if victims and budget > 0 and self._used(device) + need > budget:
                    victim = victims[0]   # OrderedDict order: least recently used first
                elif mains and self.max_models is not None and n_main > self.max_models:
                    victim = mains[0]
                else:
                    return
                self._loaded.pop(victim.name, None)
                self.evictions += 1
            log.info("models: evicting %s (%s, %.1f MiB) to make room", victim.name, victim.kind, victim.size / MiB)
            self._free()
            self.on_event(*events.model_unloaded(victim.name))

    def unload(self, name: str | None = None) -> list[str]:
        with self._lock:
            names = [name] if name else list(self._loaded)
            dropped = [n for n in names if self._loaded.pop(n, None) is not None]
        self._free()
        for n in dropped:
            self.on_event(*events.model_unloaded(n))
        return dropped

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def reset_patches(self) -> None:
        """After every job: take LoRAs and embeddings off the cached models (exact original weights). A model
        that cannot be restored is dropped, so the next job loads it clean."""
        with self._lock:
            slots = [s for s in self._loaded.values() if s.kind == "main"]
        for s in slots:
            patcher = getattr(s.value, "patcher", None)
            if patcher is None:
                continue
            try:
                patcher.reset()
            except Exception:
                log.exception("models: could not restore %s after a LoRA/embedding; unloading it", s.name)
                self.unload(s.name)

    def stats(self) -> dict:
        with self._lock:
            return {"loads": self.loads, "hits": self.hits, "evictions": self.evictions,
                    "ram_used_mb": round(self._used("cpu") / MiB, 1),
                    "ram_budget_mb": round(self.budgets["cpu"] / MiB, 1),
                    "vram_used_mb": round(self._used("gpu") / MiB, 1),
                    "vram_budget_mb": round(self.budgets["gpu"] / MiB, 1),
                    "loaded": [{"name": s.name, "type": s.kind, "size_mb": round(s.size / MiB, 2),
                                "device": s.device} for s in self._loaded.values()]}

    @staticmethod
    def _free():
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
