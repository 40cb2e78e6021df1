"""Regional cross-attention for SD1/SD2/SDXL UNets: each region's text conditions only the latent pixels its
coverage map covers, at every UNet resolution, and IP-Adapter image tokens (with an optional mask each) are
added in the same processor.

Design (why, in short; protocol/SPEC.md says more): every cross-attention layer (attn2) attends to each region's
text separately - the background (what no region covers) to the base prompt, exactly as diffusers' own
processor does - and blends the outputs per pixel with the coverage maps, normalised to sum to 1 at that
layer's resolution (area-averaged, so soft edges and the 2x2 cells of the deepest layers blend rather than snap).
This is krita-ai-diffusion's design, not InvokeAI's single pass over concatenated tokens with an attention bias:
- regions whose text equals the base give the base's numbers (the same attention, weights summing to 1), so
  "regions that say nothing new change nothing" holds to float rounding;
- each region keeps its own token count (75-token chunks, BREAK) and its own negative prompt: nothing is padded
  to a common length, and no softmax mixes one region's tokens with another's;
- soft masks (feathered layer alpha) mean something; a bias is all-or-nothing per token.
The cost is one extra attention over 77-token keys per region and layer; cross-attention is the cheap part of a
UNet step (self-attention and convolutions dominate), so a few regions cost a few percent.

Self-attention (attn1) is untouched. The processors are installed for one denoise call and the model's own
processors (diffusers' defaults, or IP-Adapter processors a loader put there) are restored after it; an
IP-Adapter processor found on a layer is kept inside the regional one, which applies its to_k_ip/to_v_ip/scale
with diffusers' IPAdapterAttnProcessor2_0 semantics, so regions and IP-Adapter never overwrite each other.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-6


@dataclass
class RegionalState:
    """What the processors of one denoise call read.

    contexts: per region (negative embeds, prompt embeds), each (1, L_i, D) on the model's device and dtype.
    coverage: (1 + regions, H, W) float32 on the model's device at the latent grid: row 0 is the background
      (the base prompt, i.e. the encoder_hidden_states the pipeline passes), then one row per region.
    ip_masks: per IP-Adapter (in the order its processor holds them) a (H, W) coverage map or None (everywhere).
    """

    contexts: list[tuple[torch.Tensor, torch.Tensor]]
    coverage: torch.Tensor
    ip_masks: list[torch.Tensor | None] = field(default_factory=list)
    _levels: dict = field(default_factory=dict, repr=False)

    def weights(self, seq_len: int) -> torch.Tensor:
        """(1 + regions, seq_len, 1): each row's share of every pixel at the layer whose sequence is seq_len."""
        got = self._levels.get(seq_len)
        if got is None:
            m = self._resize(self.coverage, seq_len)
            got = (m / m.sum(0, keepdim=True).clamp_min(EPS)).reshape(m.shape[0], seq_len, 1)
            self._levels[seq_len] = got
        return got

    def ip_weight(self, index: int, seq_len: int) -> torch.Tensor | None:
        """(seq_len, 1) coverage of IP-Adapter `index`'s mask at this layer, or None for everywhere."""
        if index >= len(self.ip_masks) or self.ip_masks[index] is None:
            return None
        key = (index, seq_len)
        got = self._levels.get(key)
        if got is None:
            got = self._resize(self.ip_masks[index][None], seq_len).reshape(seq_len, 1)
            self._levels[key] = got
        return got

    def _resize(self, maps: torch.Tensor, seq_len: int) -> torch.Tensor:
        """maps (N, H, W) at the latent grid, area-averaged to the UNet level whose h*w is seq_len (each level
        halves the grid, rounding up as the UNet's stride-2 convolutions do)."""
        h, w = maps.shape[-2:]
        while h * w > seq_len:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        if h * w != seq_len:
            raise RuntimeError(f"regional attention: no UNet level of a {maps.shape[-1]}x{maps.shape[-2]} latent "
                               f"has {seq_len} pixels")
        return F.interpolate(maps[None].float(), size=(h, w), mode="area")[0]


def latent_coverage(maps: list[np.ndarray], latent_hw: tuple[int, int], device) -> torch.Tensor:
    """float32 (N, H, W) on device: coverage maps over the generated area, area-averaged to the latent grid."""
    t = torch.from_numpy(np.stack(maps).astype(np.float32))
    return F.interpolate(t[None], size=latent_hw, mode="area")[0].to(device)


class RegionalAttnProcessor:
    """The attn2 processor while regions (and/or masked IP-Adapter references) are in use. `ip` is the
    IPAdapterAttnProcessor2_0 that was on this layer (its to_k_ip/to_v_ip/scale are applied here), or None."""

    def __init__(self, state: RegionalState, ip=None):
        self.state = state
        self.ip = ip

    def _attend(self, attn, query, context, batch_size, head_dim, attention_mask=None):
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = attn.to_v(context).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False)
        return out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 ip_adapter_masks=None, **kwargs):
        ip_states = None
        if isinstance(encoder_hidden_states, tuple):   # a UNet with an IP-Adapter projection: (text, [image tokens])
            encoder_hidden_states, ip_states = encoder_hidden_states
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, seq_len, _ = hidden_states.shape
        if encoder_hidden_states is None:
            raise RuntimeError("RegionalAttnProcessor is for cross-attention layers only")
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        inner_dim = attn.to_k.out_features
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)

        # background: the base prompt, as the pipeline passed it (CFG: [negative, prompt] along the batch)
        out = self._attend(attn, query, encoder_hidden_states, batch_size, head_dim, attention_mask)
        state = self.state
        if state.contexts:
            w = state.weights(seq_len).to(out.dtype)
            out = out * w[0]
            for (neg, pos), wi in zip(state.contexts, w[1:]):
                if not bool(wi.any()):
                    continue   # this region covers nothing at this resolution
                ctx = torch.cat([neg, pos]) if batch_size == 2 * pos.shape[0] else pos
                out = out + wi * self._attend(attn, query, ctx.to(query.dtype), batch_size, head_dim)
        if self.ip is not None and ip_states is not None:
            out = self._add_ip(attn, query, out, ip_states, ip_adapter_masks, batch_size, head_dim, seq_len)

        hidden_states = attn.to_out[0](out)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _add_ip(self, attn, query, out, ip_states, ip_adapter_masks, batch_size, head_dim, seq_len):
        """IPAdapterAttnProcessor2_0's image-token attention, added with its scale; a mask per adapter from the
        regional state (engine references) or from diffusers' ip_adapter_masks (its own preprocessing)."""
        ip = self.ip
        masks = ip_adapter_masks
        if masks is not None and not isinstance(masks, list):
            masks = list(masks.unsqueeze(1))
        for j, (tokens, scale, to_k_ip, to_v_ip) in enumerate(zip(ip_states, ip.scale, ip.to_k_ip, ip.to_v_ip)):
            scales = scale if isinstance(scale, list) else [scale]
            if all(s == 0 for s in scales):
                continue
            dmask = masks[j] if masks is not None else None
            if dmask is not None:   # diffusers' per-image masks: (1, images, H, W)
                from diffusers.image_processor import IPAdapterMaskProcessor

                scales = scales if len(scales) == dmask.shape[1] else scales * dmask.shape[1]
                for i in range(dmask.shape[1]):
                    got = self._ip_attend(attn, query, tokens[:, i], to_k_ip, to_v_ip, batch_size, head_dim)
                    m = IPAdapterMaskProcessor.downsample(dmask[:, i], batch_size, got.shape[1], got.shape[2])
                    out = out + scales[i] * got * m.to(dtype=query.dtype, device=query.device)
                continue
            got = self._ip_attend(attn, query, tokens, to_k_ip, to_v_ip, batch_size, head_dim)
            m = self.state.ip_weight(j, seq_len)
            out = out + scales[0] * (got if m is None else got * m.to(got.dtype))
        return out

    @staticmethod
    def _ip_attend(attn, query, tokens, to_k_ip, to_v_ip, batch_size, head_dim):
        key = to_k_ip(tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = to_v_ip(tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        got = F.scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
        return got.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)


@contextmanager
def regional_attention(unet, state: RegionalState):
    """Put RegionalAttnProcessor on every cross-attention layer of `unet` for the block; the layers' own
    processors (IP-Adapter ones included) are restored after it, also when it raises (cancel)."""
    own = unet.attn_processors
    procs = {}
    for name, proc in own.items():
        if name.endswith("attn2.processor"):
            procs[name] = RegionalAttnProcessor(state, proc if hasattr(proc, "to_k_ip") else None)
        else:
            procs[name] = proc
    unet.set_attn_processor(procs)
    try:
        yield
    finally:
        unet.set_attn_processor(own)
