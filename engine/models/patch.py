"""LoRAs and textual-inversion embeddings on a cached model, for one job at a time, undone after it.

LoRA: the weights of each targeted Linear/Conv layer are backed up, then W += weight * alpha/rank * up @ down.
After the job (JobQueue calls ModelCache.reset_patches) the backups are copied back, so the cached model is bit
for bit what it was. Key layouts: kohya (`lora_unet_*`, `lora_te_*`, `lora_te1_/te2_*`, with `.lora_down/
.lora_up/.alpha`; SDXL's SGM block names and FLUX's kohya names are first mapped by diffusers' converters),
diffusers/PEFT (`unet.*.lora_A/lora_B.weight`, `text_encoder.*`, `transformer.*`, old `*.lora.down/up`,
`processor.to_k_lora`). LoHa/LoKr are refused with a message.

Embeddings: written in a prompt as `<name>` (the registered embedding's name in angle brackets; text that is not
a registered embedding is left alone). For the job, the pipeline gets a copy of its tokenizer with one added token
per vector and the text encoder a copy of its token-embedding table with those rows; both are swapped back after
the job. SD1/SD2: `emb_params` (.safetensors), `string_to_param` (.pt), diffusers `{token: tensor}`; SDXL:
`clip_l` + `clip_g`.

Which LoRAs are active is part of the model value (ModelRef) that flows along graph edges, so a graph can use a
model with and without a LoRA: each use switches the weights to what that value asks for.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import BadRequest, ModelError
from ..graph.node import ModelValue

log = logging.getLogger("paintbridge.models")

EMBEDDING_RE = re.compile(r"<([^<>\n]{1,200})>")


# ---- loading ------------------------------------------------------------------------------------------------
def _read_tensors(path: Path) -> dict:
    from .probe import weight_file
    from .upscale import load_state_dict

    path = Path(path)
    if path.is_dir():
        wf = weight_file(path)
        if wf is None:
            raise ModelError(f"{path.name}: no weight file in the folder")
        path = wf
    return load_state_dict(path)


@dataclass
class LoraWeights:
    name: str
    base: str | None
    tensors: dict = field(repr=False)


@dataclass
class EmbeddingWeights:
    name: str
    base: str | None
    tensors: dict = field(repr=False)   # "clip_l" (and "clip_g" for SDXL): [n, dim]


def load_lora(entry) -> LoraWeights:
    sd = _read_tensors(entry.path)
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    return LoraWeights(entry.name, entry.family, sd)


def load_embedding(entry) -> EmbeddingWeights:
    raw = _read_tensors(entry.path)
    out: dict[str, torch.Tensor] = {}
    if "clip_l" in raw or "clip_g" in raw:
        for k in ("clip_l", "clip_g"):
            if isinstance(raw.get(k), torch.Tensor):
                out[k] = raw[k]
    elif isinstance(raw.get("emb_params"), torch.Tensor):
        out["clip_l"] = raw["emb_params"]
    elif isinstance(raw.get("string_to_param"), dict) and raw["string_to_param"]:
        out["clip_l"] = next(iter(raw["string_to_param"].values()))
    else:
        tensors = [v for v in raw.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            out["clip_l"] = tensors[0]
    if not out:
        raise ModelError(f"{entry.name}: not a textual-inversion embedding Paintbridge can read")
    out = {k: (v[None] if v.ndim == 1 else v.reshape(-1, v.shape[-1])).detach().float() for k, v in out.items()}
    return EmbeddingWeights(entry.name, entry.family, out)


# ---- base checks (before queueing and while running) -------------------------------------------------------
def check_base(addon, family: str | None, model_name: str) -> None:
    kind = addon.type if hasattr(addon, "type") else "add-on"
    base = getattr(addon, "family", None) if hasattr(addon, "family") else getattr(addon, "base", None)
    if family and base and base != family:
        raise BadRequest(f"{kind} {addon.name!r} is for {base.upper()} models, but {model_name!r} is "
                         f"{family.upper()}: choose a {family.upper()} {kind} or another model",
                         details={"model": addon.name, "base": base, "model_base": family})


def check_vae(entry, family: str | None, model_name: str) -> None:
    """A VAE fits a model of its base; SD1's VAE is SD2's too (the same autoencoder)."""
    base = entry.family
    if family and base and base != family and not (base == "sd1" and family == "sd2"):
        raise BadRequest(f"VAE {entry.name!r} is for {base.upper()} models, but {model_name!r} is {family.upper()}: "
                         f"choose a {family.upper()} VAE", details={"model": entry.name, "base": base,
                                                                    "model_base": family})


def embedding_names(text: str) -> list[str]:
    return [m.group(1) for m in EMBEDDING_RE.finditer(text or "")]


def check_addons(registry, main_entry, loras=(), texts=()) -> None:
    """Refuse (BadRequest) LoRAs that are unknown, not LoRAs, or for another base, and embeddings named in the
    prompts that are for another base or unsupported there. Cheap: registry lookups only."""
    for ref in loras:
        name = ref["model"] if isinstance(ref, dict) else ref.model
        entry = registry.get(name, type="lora")
        check_base(entry, main_entry.family, main_entry.name)
    for text in texts:
        for name in embedding_names(text):
            entry = registry.find(name)
            if entry is None or entry.type != "embedding":
                continue
            check_base(entry, main_entry.family, main_entry.name)
            if main_entry.family == "flux":
                raise BadRequest(f"embedding {name!r}: FLUX models do not take textual-inversion embeddings")


def check_graph(registry, graph) -> None:
    """Before queueing a graph: every model named exists with the right type; LoRAs and embeddings match the
    base of the load_model that feeds them."""
    def upstream_model(nid, seen=0):
        if seen > 64:
            return None
        cls = graph.nodes[nid]
        if cls.type == "load_model":
            return registry.get(graph.literals[nid]["model"], type="main")
        src = graph.edges[nid].get("model")
        return upstream_model(src[0], seen + 1) if src else None

    for nid, cls in graph.nodes.items():
        lits = graph.literals[nid]
        if cls.type == "load_upscaler":
            registry.get(lits["model"], type="upscaler")
        elif cls.type == "load_model" and lits.get("vae"):
            check_vae(registry.get(lits["vae"], type="vae"), registry.get(lits["model"], type="main").family,
                      lits["model"])
        elif cls.type == "lora":
            main = upstream_model(nid)
            entry = registry.get(lits["lora"], type="lora")
            if main is not None:
                check_base(entry, main.family, main.name)
        elif cls.type == "prompt":
            main = upstream_model(nid)
            if main is not None:
                check_addons(registry, main, texts=[lits.get("text", ""), lits.get("negative", "")])


# ---- model values -------------------------------------------------------------------------------------------
class ModelRef(ModelValue):
    """A cached model plus the LoRAs this branch of the graph wants. Reading `.loaded` puts exactly those LoRAs
    on the shared pipeline (undoing others) and returns it."""

    def __init__(self, loaded, name: str, loras: tuple = (), sha256: str = "", vae: tuple | None = None):
        self._loaded = loaded
        self.name = name
        self.sha256 = sha256
        self.loras = tuple(loras)
        self.vae = vae   # (name, AutoencoderKL) used instead of the model's own, or None

    @property
    def loaded(self):
        patcher = patcher_for(self._loaded)
        patcher.set_loras(self.loras)
        patcher.set_vae(self.vae)
        return self._loaded

    def with_lora(self, name: str, weight: float, weights) -> "ModelRef":
        return ModelRef(self._loaded, self.name, self.loras + ((name, float(weight), weights),), self.sha256,
                        self.vae)

    @property
    def raw(self):
        return self._loaded

    def __repr__(self):
        return f"ModelRef({self.name!r}, loras={[(n, w) for n, w, _ in self.loras]})"


def patcher_for(loaded) -> "ModelPatcher":
    p = getattr(loaded, "patcher", None)
    if p is None:
        p = ModelPatcher(loaded)
        loaded.patcher = p
    return p


def expand_prompt(registry, cache, text: str, model: ModelValue) -> str:
    """Replace `<name>` of registered embeddings with their tokens (loading them into the model for this job)."""
    if not text or "<" not in text:
        return text
    loaded = model.raw if isinstance(model, ModelRef) else model.loaded

    def repl(m):
        name = m.group(1)
        entry = registry.find(name)
        if entry is None or entry.type != "embedding":
            return m.group(0)
        check_base(entry, loaded.family, loaded.name)
        if loaded.family == "flux":
            raise BadRequest(f"embedding {name!r}: FLUX models do not take textual-inversion embeddings")
        emb = cache.get_embedding(name)
        return patcher_for(loaded).add_embedding(name, emb)

    return EMBEDDING_RE.sub(repl, text)


# ---- the patcher ----------------------------------------------------------------------------------------------
_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2")
_KOHYA_PREFIX = {"unet": ("lora_unet_",), "transformer": ("lora_unet_", "lora_transformer_"),
                 "text_encoder": ("lora_te_", "lora_te1_"), "text_encoder_2": ("lora_te2_",)}


def _module_maps(pipe) -> tuple[dict, dict]:
    """({diffusers path: module}, {kohya name: module}) for every Linear/Conv2d of the pipeline's networks."""
    paths, kohya = {}, {}
    for comp in _COMPONENTS:
        net = getattr(pipe, comp, None)
        if not isinstance(net, torch.nn.Module):
            continue
        is_te = comp.startswith("text_encoder")
        for name, mod in net.named_modules():
            if not isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            names = {name}
            if is_te:
                names.add(name[len("text_model."):] if name.startswith("text_model.") else "text_model." + name)
            for n in names:
                paths[f"{comp}.{n}"] = mod
                for pre in _KOHYA_PREFIX[comp]:
                    kohya[pre + n.replace(".", "_")] = mod
    return paths, kohya


_SUFFIXES = [  # (suffix, role)
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"), ("_lora.down.weight", "down"),
    ("_lora.up.weight", "up"), (".lora_A.default.weight", "down"), (".lora_B.default.weight", "up"),
    (".alpha", "alpha"), (".lora_mid.weight", "mid"),
]


def _group(sd: dict) -> dict[str, dict]:
    groups: dict[str, dict] = {}
    for k, v in sd.items():
        if any(t in k for t in (".hada_", ".lokr_", ".oft_", ".diff")):
            raise ModelError("this LoRA is a LoHa/LoKr/OFT/full-diff network; only plain LoRA/LoCon is supported")
        if "dora_scale" in k:
            continue
        for suf, role in _SUFFIXES:
            if k.endswith(suf):
                prefix = k[: -len(suf)]
                if suf.startswith("_lora."):   # old attn-processor layout: ...processor.to_k_lora.down.weight
                    prefix = prefix.replace(".processor.", ".")
                    prefix = prefix + ".0" if prefix.endswith("to_out") else prefix
                groups.setdefault(prefix, {})[role] = v
                break
    return groups


def _resolve(prefix: str, paths: dict, kohya: dict):
    if prefix in kohya:
        return kohya[prefix]
    p = prefix.removeprefix("base_model.model.")
    p = p.replace(".self_attn.to_q", ".self_attn.q_proj").replace(".self_attn.to_k", ".self_attn.k_proj") \
         .replace(".self_attn.to_v", ".self_attn.v_proj").replace(".self_attn.to_out.0", ".self_attn.out_proj") \
         .replace(".self_attn.to_out", ".self_attn.out_proj")
    if p in paths:
        return paths[p]
    for comp in ("unet", "transformer"):
        if f"{comp}.{p}" in paths:
            return paths[f"{comp}.{p}"]
    return None


def lora_deltas(lw: LoraWeights, loaded) -> list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float]]:
    """[(module, down, up, alpha/rank)] for a LoRA on a loaded model; ModelError if it fits none of its layers."""
    sd = lw.tensors
    keys = list(sd)
    if loaded.family == "flux" and any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers
        sd = _convert_kohya_flux_lora_to_diffusers(dict(sd))
    elif any(k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block"))
             for k in keys):
        from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers
        sd = _maybe_map_sgm_blocks_to_diffusers(dict(sd), loaded.pipe.unet.config)
    paths, kohya = _module_maps(loaded.pipe)
    out, missed = [], []
    for prefix, parts in _group(sd).items():
        if "down" not in parts or "up" not in parts:
            continue
        if "mid" in parts:
            raise ModelError(f"LoRA {lw.name!r} uses LoCon with a mid (Tucker) weight, which is not supported")
        mod = _resolve(prefix, paths, kohya)
        if mod is None:
            missed.append(prefix)
            continue
        down, up = parts["down"], parts["up"]
        rank = down.shape[0]
        alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
        out.append((mod, down, up, alpha / rank))
    if not out:
        raise ModelError(f"LoRA {lw.name!r} fits no layer of model {loaded.name!r} (is it for another model "
                         f"family? {len(missed)} unmatched layers, e.g. {missed[:2]})")
    if missed:
        log.warning("LoRA %s: %d of %d layers match nothing in %s (ignored), e.g. %s", lw.name, len(missed),
                    len(missed) + len(out), loaded.name, missed[:3])
    return out


def _delta(weight: torch.Tensor, down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    d = down.to(weight.device, torch.float32)
    u = up.to(weight.device, torch.float32)
    delta = u.flatten(1) @ d.flatten(1)   # (out, in*kh*kw)
    if delta.numel() != weight.numel():
        raise ModelError(f"LoRA layer of shape {tuple(delta.shape)} does not fit a weight of shape "
                         f"{tuple(weight.shape)} (a LoRA for another model size?)")
    return delta.reshape(weight.shape)


class ModelPatcher:
    def __init__(self, loaded):
        self.loaded = loaded
        self.active: tuple = ()             # ((lora name, weight), ...)
        self._backup: dict[int, tuple[torch.nn.Module, torch.Tensor]] = {}
        self._ti_saved: dict[str, Any] = {}     # attr -> original tokenizer / embedding module
        self._ti_text: dict[str, str] = {}      # embedding name -> replacement text
        self._ti_count = 0
        self._vae_saved = None                  # the model's own VAE while another is on

    @property
    def dirty(self) -> bool:
        return bool(self._backup or self._ti_saved or self._vae_saved is not None)

    # -- VAE override
    def set_vae(self, vae: tuple | None) -> None:
        """Put a registry VAE ((name, module)) on the pipeline and its img2img/inpaint variants; None = own."""
        pipe = self.loaded.pipe
        want = vae[1] if vae is not None else (self._vae_saved if self._vae_saved is not None else pipe.vae)
        if vae is not None and self._vae_saved is None:
            self._vae_saved = pipe.vae
        for p in (pipe, *self.loaded.variants.values()):
            if p.vae is not want:
                p.vae = want
        if vae is None:
            self._vae_saved = None

    # -- LoRA
    def set_loras(self, loras: tuple) -> None:
        key = tuple((n, float(w)) for n, w, _ in loras)
        if key == self.active:
            return
        self._restore_weights()
        try:
            for name, weight, lw in loras:
                if weight == 0:
                    continue
                for mod, down, up, scale in lora_deltas(lw, self.loaded):
                    w = mod.weight
                    if id(mod) not in self._backup:
                        self._backup[id(mod)] = (mod, w.detach().to("cpu", copy=True))
                    with torch.no_grad():
                        w.add_((_delta(w, down, up) * (scale * float(weight))).to(w.dtype))
        except Exception:
            self._restore_weights()
            raise
        self.active = key

    def _restore_weights(self) -> None:
        with torch.no_grad():
            for mod, orig in self._backup.values():
                mod.weight.copy_(orig.to(mod.weight.device))
        self._backup.clear()
        self.active = ()

    # -- embeddings
    def add_embedding(self, name: str, emb: EmbeddingWeights) -> str:
        if name in self._ti_text:
            return self._ti_text[name]
        pipe = self.loaded.pipe
        if self.loaded.family == "sdxl":
            if "clip_g" not in emb.tensors:
                raise BadRequest(f"embedding {name!r} has no clip_g vectors, so it is not an SDXL embedding")
            parts = [("tokenizer", "text_encoder", emb.tensors["clip_l"]),
                     ("tokenizer_2", "text_encoder_2", emb.tensors["clip_g"])]
        else:
            parts = [("tokenizer", "text_encoder", emb.tensors["clip_l"])]
        n = parts[0][2].shape[0]
        self._ti_count += 1
        tokens = [f"<pbemb{self._ti_count}x{i}>" for i in range(n)]
        for tok_attr, te_attr, vecs in parts:
            te = getattr(pipe, te_attr)
            old = te.get_input_embeddings()
            if vecs.shape[-1] != old.embedding_dim or vecs.shape[0] != n:
                raise BadRequest(f"embedding {name!r} has {vecs.shape[-1]}-wide vectors but {self.loaded.name!r}'s "
                                 f"{te_attr} takes {old.embedding_dim}: it is for another model")
        for tok_attr, te_attr, vecs in parts:
            te = getattr(pipe, te_attr)
            if tok_attr not in self._ti_saved:
                self._ti_saved[tok_attr] = getattr(pipe, tok_attr)
                setattr(pipe, tok_attr, copy.deepcopy(getattr(pipe, tok_attr)))
            tok = getattr(pipe, tok_attr)
            tok.add_tokens(tokens)
            ids = tok.convert_tokens_to_ids(tokens)
            cur = te.get_input_embeddings()
            need = max(ids) + 1
            if te_attr not in self._ti_saved or need > cur.num_embeddings:
                new = torch.nn.Embedding(max(need, cur.num_embeddings), cur.embedding_dim,
                                         device=cur.weight.device, dtype=cur.weight.dtype)
                with torch.no_grad():
                    new.weight[: cur.num_embeddings] = cur.weight
                self._ti_saved.setdefault(te_attr, cur)
                te.set_input_embeddings(new)
                cur = new
            with torch.no_grad():
                cur.weight[ids] = vecs.to(cur.weight.device, cur.weight.dtype)
        text = " ".join(tokens)
        self._ti_text[name] = text
        return text

    def _restore_embeddings(self) -> None:
        pipe = self.loaded.pipe
        for attr, saved in self._ti_saved.items():
            if attr.startswith("tokenizer"):
                setattr(pipe, attr, saved)
            else:
                getattr(pipe, attr).set_input_embeddings(saved)
        self._ti_saved.clear()
        self._ti_text.clear()

    def reset(self) -> None:
        try:
            self._restore_weights()
        finally:
            try:
                self._restore_embeddings()
            finally:
                self.set_vae(None)
