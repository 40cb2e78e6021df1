"""Run diffusion on a LoadedModel: encode prompts, denoise (txt2img / img2img / inpaint), decode, preview.

Controls (ControlNet, T2I-Adapter) and references (IP-Adapter) act on the same pipelines in every mode, through a
UNet pre-hook and IP-Adapter attention processors installed for one call (engine/models/control.py says how);
one that never acts (strength 0, an empty start/end range) is left out, so the result is the request's without it.

Thin layer over the real diffusers pipelines. img2img/inpaint variants are made with `Pipeline.from_pipe(base)`
so they share the loaded components. Every call gets a fresh scheduler (schedulers keep per-run state) and a
CPU torch.Generator, so the same seed and arguments give bit-identical latents on a given device.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from engine import attention, conditioning, prompts, samplers
from engine.errors import BadRequest, Canceled
from engine.models.control import Control, ControlHook, Reference, attach_ip_adapters, detach_ip_adapters, ever_acts
from engine.models.loader import LoadedModel
from engine.models.preview import latent_preview, unpack_flux

SCHEDULERS = tuple(samplers.SAMPLERS)   # ids; A1111 labels are accepted too (engine/samplers.py)
TCD_GAMMA = 0.3   # TCD's stochasticity (its authors' default), passed as the pipeline's eta
FLUX_MAX_SEQUENCE_LENGTH = 512


@dataclass
class RegionConditioning:
    """One region: its prompt tensors and its coverage (float32 (H, W) in [0, 1] over the generated area)."""

    index: int
    prompt: str
    negative: str
    tensors: dict = field(repr=False)
    coverage: np.ndarray = field(repr=False)


@dataclass
class Conditioning:
    """Opaque, family-specific prompt tensors (already on the model's device). With regions, the base tensors
    condition the background (coverage `background`) and each region its own coverage (engine/attention.py)."""

    family: str
    prompt: str
    negative: str
    tensors: dict = field(default_factory=dict, repr=False)
    clip_skip: int = 1
    regions: list[RegionConditioning] = field(default_factory=list)
    background: np.ndarray | None = field(default=None, repr=False)
    # regions' IP-Adapter references: (Reference, its region's coverage, or None where the region became the base)
    references: list = field(default_factory=list, repr=False)


def encode_prompt(model: LoadedModel, prompt: str, negative: str = "", clip_skip: int = 1) -> Conditioning:
    """Prompt tensors for `model`. SD1/SD2/SDXL: long prompts in 75-token chunks, A1111 weights and BREAK, clip
    skip (engine/conditioning.py). FLUX: the words without weight syntax (T5 reads 512 tokens)."""
    if not 1 <= int(clip_skip) <= 12:
        raise BadRequest(f"clip_skip must be between 1 and 12, got {clip_skip}")
    pipe = model.pipe
    t: dict = {}
    with torch.inference_mode():
        if model.family in ("sd1", "sd2"):
            # Always encode the negative too, so any guidance > 1 can use it.
            t = conditioning.encode([(pipe.tokenizer, pipe.text_encoder)], prompt, negative, clip_skip)
        elif model.family == "sdxl":
            t = conditioning.encode(
                [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)], prompt, negative,
                clip_skip, sdxl=True, zero_negative=bool(pipe.config.get("force_zeros_for_empty_prompt", False)))
        elif model.family == "flux":
            # FLUX-dev uses distilled guidance, not CFG: the negative prompt is recorded but not encoded.
            pe, ppe, _ = pipe.encode_prompt(
                prompt=prompts.plain(prompt), prompt_2=None, device=model.device, num_images_per_prompt=1,
                max_sequence_length=FLUX_MAX_SEQUENCE_LENGTH,
            )
            t = {"prompt_embeds": pe, "pooled_prompt_embeds": ppe}
        else:
            raise BadRequest(f"unsupported model family {model.family!r}")
    return Conditioning(family=model.family, prompt=prompt, negative=negative, tensors=t, clip_skip=int(clip_skip))


def _make_scheduler(model: LoadedModel, sampler: str, schedule: str, seed: int):
    """A fresh diffusers scheduler for a resolved (sampler id, schedule), from the model's own config."""
    import diffusers

    if model.scheduler_config is None:
        model.scheduler_config = model.pipe.scheduler.config
    cfg = model.scheduler_config
    if model.family == "flux":
        return diffusers.FlowMatchEulerDiscreteScheduler.from_config(cfg)  # the only one that applies
    extra: dict = {}
    if schedule == "karras":
        extra["use_karras_sigmas"] = True
    elif schedule == "trailing":
        extra["timestep_spacing"] = "trailing"
    if sampler == "euler":
        return diffusers.EulerDiscreteScheduler.from_config(cfg, **extra)
    if sampler == "euler_a":
        return diffusers.EulerAncestralDiscreteScheduler.from_config(cfg, **extra)
    if sampler == "heun":
        return diffusers.HeunDiscreteScheduler.from_config(cfg, **extra)
    if sampler in ("dpmpp_2m", "dpmpp_2m_sde"):
        algo = "dpmsolver++" if sampler == "dpmpp_2m" else "sde-dpmsolver++"
        return diffusers.DPMSolverMultistepScheduler.from_config(cfg, algorithm_type=algo, solver_order=2, **extra)
    if sampler == "dpmpp_sde":
        # Its Brownian-tree noise is seeded from the job's seed, so the same seed gives the same image.
        return diffusers.DPMSolverSDEScheduler.from_config(cfg, noise_sampler_seed=int(seed) % 2 ** 63, **extra)
    if sampler == "ddim":
        # SD configs predate DDIM's clip_sample default; latents must not be clipped to [-1, 1].
        return diffusers.DDIMScheduler.from_config(
            cfg, clip_sample=cfg.get("clip_sample", False), set_alpha_to_one=cfg.get("set_alpha_to_one", False),
            **extra)
    if sampler == "unipc":
        return diffusers.UniPCMultistepScheduler.from_config(cfg, **extra)
    if sampler == "lcm":
        return diffusers.LCMScheduler.from_config(cfg, **extra)
    if sampler == "tcd":
        return diffusers.TCDScheduler.from_config(cfg, **extra)
    raise BadRequest(f"unknown scheduler {sampler!r}; choose one of {', '.join(samplers.SAMPLERS)}")


def _variant(model: LoadedModel, mode: str):
    """The pipeline for `mode`, sharing the base pipeline's components (built once, then cached)."""
    if mode == "txt2img":
        return model.pipe
    if mode not in model.variants:
        import diffusers

        cls = {
            ("img2img", "sd1"): diffusers.StableDiffusionImg2ImgPipeline,
            ("img2img", "sd2"): diffusers.StableDiffusionImg2ImgPipeline,
            ("img2img", "sdxl"): diffusers.StableDiffusionXLImg2ImgPipeline,
            ("img2img", "flux"): diffusers.FluxImg2ImgPipeline,
            ("inpaint", "sd1"): diffusers.StableDiffusionInpaintPipeline,
            ("inpaint", "sd2"): diffusers.StableDiffusionInpaintPipeline,
            ("inpaint", "sdxl"): diffusers.StableDiffusionXLInpaintPipeline,
            ("inpaint", "flux"): diffusers.FluxInpaintPipeline,
        }[(mode, model.family)]
        p = cls.from_pipe(model.pipe)
        p.set_progress_bar_config(disable=True)
        model.variants[mode] = p
    return model.variants[mode]


def _check_args(model, cond, width, height, steps, strength, init_image, mask, scheduler, schedule):
    if cond.family != model.family:
        raise BadRequest(f"conditioning was encoded for {cond.family}, model is {model.family}")
    try:
        resolved = samplers.resolve(scheduler, schedule)
    except ValueError as e:
        raise BadRequest(str(e), details={"field": "scheduler"}) from None
    mult = model.pipe.vae_scale_factor * (2 if model.family == "flux" else 1)
    mult = max(mult, 8)
    if width < mult or height < mult or width % mult or height % mult:
        raise BadRequest(f"width and height must be positive multiples of {mult}, got {width}x{height}")
    if not 1 <= steps <= 1000:
        raise BadRequest(f"steps must be between 1 and 1000, got {steps}")
    if not 0.0 < strength <= 1.0:
        raise BadRequest(f"strength must be in (0, 1], got {strength}")
    if init_image is not None:
        if init_image.dtype != np.uint8 or init_image.shape != (height, width, 3):
            raise BadRequest(f"init_image must be a {height}x{width}x3 uint8 array, got {init_image.dtype} {init_image.shape}")
    if mask is not None:
        if init_image is None:
            raise BadRequest("a mask needs an init_image")
        if mask.dtype != np.uint8 or mask.shape != (height, width):
            raise BadRequest(f"mask must be a {height}x{width} uint8 array, got {mask.dtype} {mask.shape}")
    if init_image is not None and mask is None and strength * steps < 1:
        raise BadRequest(f"strength {strength} with {steps} steps leaves no step to run")
    return resolved


def denoise(
    model: LoadedModel,
    cond: Conditioning,
    *,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    seed: int,
    scheduler: str = "euler",
    schedule: str = "default",
    strength: float = 1.0,
    init_image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    on_step: Callable[[int, int, torch.Tensor], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    controls: list[Control] | tuple = (),
    references: list[Reference] | tuple = (),
) -> torch.Tensor:
    """Final latents, (1, C, height/f, width/f) in the model's scaled latent space (FLUX: unpacked)."""
    sampler, schedule = _check_args(model, cond, width, height, steps, strength, init_image, mask, scheduler,
                                    schedule)
    # the steps this call runs (img2img/inpaint: strength of them); a control that acts on none is left out
    run = max(1, min(int(steps * strength), steps)) if init_image is not None else steps
    controls = [c for c in controls if ever_acts(c, run)]
    # regions' own references act where their region does (mask = its coverage); the others everywhere
    steering = [(r, None) for r in references] + list(cond.references)
    steering = [(r, m) for r, m in steering if ever_acts(r, run)]
    references = [r for r, _ in steering]
    ip_masks = [m for _, m in steering]
    if (controls or references) and model.family not in ("sd1", "sd2", "sdxl"):
        raise BadRequest(f"controls and references work with SD1/SD2/SDXL models, not {model.family}",
                         details={"field": "control" if controls else "reference"})
    if is_canceled is not None and is_canceled():
        raise Canceled("canceled before the first step")
    mode = "txt2img" if init_image is None else ("img2img" if mask is None else "inpaint")
    pipe = _variant(model, mode)
    # Fresh scheduler per call; assigning it on a from_pipe variant does not touch the base pipeline.
    pipe.scheduler = _make_scheduler(model, sampler, schedule, seed)
    is_flux = model.family == "flux"

    hook = ControlHook(pipe, controls, references, width, height, steps) if (controls or references) else None

    def callback(p, i, t, kwargs):
        if hook is not None:
            hook.step = i + 1
        latents = kwargs["latents"]
        total = int(getattr(p, "_num_timesteps", steps) or steps)
        if on_step is not None:
            on_step(i + 1, total, unpack_flux(latents, height // p.vae_scale_factor, width // p.vae_scale_factor)
                    if is_flux else latents)
        # Raising here unwinds the pipeline call; all per-run state (scheduler, generator) is discarded.
        if is_canceled is not None and is_canceled():
            raise Canceled(f"canceled after step {i + 1} of {total}")
        return {}

    kwargs = dict(cond.tensors)
    kwargs.update(
        height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
        generator=torch.Generator("cpu").manual_seed(int(seed)), output_type="latent",
        callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"],
    )
    if is_flux:
        kwargs["max_sequence_length"] = FLUX_MAX_SEQUENCE_LENGTH
    elif sampler == "tcd":
        kwargs["eta"] = TCD_GAMMA
    if not is_flux and guidance <= 1.0:
        kwargs.pop("negative_prompt_embeds", None)
        kwargs.pop("negative_pooled_prompt_embeds", None)
    if mode != "txt2img":
        kwargs["image"] = Image.fromarray(init_image, "RGB")
        kwargs["strength"] = strength
    if mode == "inpaint":
        kwargs["mask_image"] = Image.fromarray(mask, "L")
    if references:
        # the pipelines' own rule for classifier-free guidance (none for guidance-distilled UNets)
        cfg = guidance > 1.0 and pipe.unet.config.get("time_cond_proj_dim") is None
        kwargs["ip_adapter_image_embeds"] = [
            (torch.cat([r.negative, r.embeds]) if cfg else r.embeds).to(model.device, model.dtype) for r in references]
    saved = attach_ip_adapters(pipe.unet, [r.adapter for r in references]) if references else None
    try:
        # the hook first (it finds the IP-Adapter processors it sets scales on), then the regional processors,
        # which keep those processors inside them
        with torch.inference_mode(), hook or contextlib.nullcontext(), _regions(pipe, cond, height, width, ip_masks):
            out = pipe(**kwargs)
    finally:
        if saved is not None:   # the cached model's UNet goes back to what it was
            detach_ip_adapters(pipe.unet, saved)
    latents = out.images
    if is_flux:
        latents = unpack_flux(latents, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    return latents


@contextlib.contextmanager
def _regions(pipe, cond: Conditioning, height: int, width: int, ip_masks: list):
    """Regional cross-attention on the pipeline's UNet for one call when `cond` has regions or a reference has a
    mask (a region's reference). ip_masks: per reference, in the order the IP-Adapter processors hold them, its
    coverage over the generated area or None (everywhere)."""
    if not cond.regions and all(m is None for m in ip_masks):
        yield
        return
    if cond.family == "flux":
        raise BadRequest("regions are not supported for FLUX models (only SD1, SD2 and SDXL)")
    f = pipe.vae_scale_factor
    unet = pipe.unet
    grid = (height // f, width // f)
    background = cond.background if cond.background is not None else np.ones(grid, np.float32)
    coverage = attention.latent_coverage([background] + [r.coverage for r in cond.regions], grid, unet.device)
    contexts = [(r.tensors["negative_prompt_embeds"], r.tensors["prompt_embeds"]) for r in cond.regions]
    masks = [None if m is None else attention.latent_coverage([m], grid, unet.device)[0] for m in ip_masks]
    with attention.regional_attention(unet, attention.RegionalState(contexts, coverage, masks)):
        yield


def _vae_decode(vae, latents: torch.Tensor, device, dtype) -> torch.Tensor:
    z = latents.to(device, dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        z = z + shift
    return vae.decode(z, return_dict=False)[0]


def decode(model: LoadedModel, latents: torch.Tensor) -> np.ndarray:
    """HxWx3 uint8 RGB of the first batch item.

    fp16 VAEs: SDXL's original VAE overflows in fp16 (NaN -> black images). A VAE whose config says
    force_upcast decodes in fp32; any other fp16 decode that still gives a non-finite value is redone in fp32
    (so the fp16-fixed SDXL VAE runs in fp16, and an unmarked one costs one extra decode, never a black image)."""
    vae = model.pipe.vae
    if latents.ndim == 3:
        latents = unpack_flux(latents)
    half = vae.dtype == torch.float16
    with torch.inference_mode():
        img = None
        if not (half and getattr(vae.config, "force_upcast", False)):
            img = _vae_decode(vae, latents, model.device, vae.dtype)
            if half and not bool(torch.isfinite(img).all()):
                img = None
        if img is None:
            own_dtype = vae.dtype
            vae.to(torch.float32)
            try:
                img = _vae_decode(vae, latents, model.device, torch.float32)
            finally:
                vae.to(own_dtype)
    img = (img[0].float().clamp(-1, 1) + 1) * 127.5
    return img.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def preview(model: LoadedModel, latents: torch.Tensor) -> np.ndarray:
    """Small HxWx3 uint8 RGB (<= 256 px a side) from a per-family linear latent->RGB map; no VAE."""
    return latent_preview(model.family, latents)
