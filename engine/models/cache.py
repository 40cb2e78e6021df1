"""Loaded models kept between jobs, least recently used first out.

Used from the job worker thread only (one job runs at a time), so a load never races another.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from typing import Callable

from .registry import ModelRegistry


class ModelCache:
    def __init__(self, registry: ModelRegistry, max_models: int = 2,
                 on_event: Callable[[str, dict], None] | None = None):
        self.registry = registry
        self.max_models = max_models
        self.on_event = on_event or (lambda name, data: None)
        self._loaded: "OrderedDict[str, object]" = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, name: str):
        from .loader import load_model

        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        entry = self.registry.get(name)
        while len(self._loaded) >= self.max_models:
            self._evict_oldest()
        loaded = load_model(entry.path, name=name)
        self.loads += 1
        with self._lock:
            self._loaded[name] = loaded
        self.on_event("model.loaded", {"model": name})
        return loaded

    def unload(self, name: str | None = None) -> list[str]:
        with self._lock:
            names = [name] if name else list(self._loaded)
            dropped = [n for n in names if self._loaded.pop(n, None) is not None]
        self._free()
        for n in dropped:
            self.on_event("model.unloaded", {"model": n})
        return dropped

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def _evict_oldest(self):
        with self._lock:
            name, _ = self._loaded.popitem(last=False)
        self._free()
        self.on_event("model.unloaded", {"model": name})

    @staticmethod
    def _free():
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
