"""Prompt text -> CLIP embeddings for SD1/SD2/SDXL: 75-token chunks, A1111 attention weights, clip skip.

A prompt (parsed by engine/prompts.py) is tokenized run by run; BREAK or every 75 tokens starts a new chunk (a
full chunk ends after its last comma when that comma is among its last 20 tokens, as in A1111).
Each chunk is encoded alone as [BOS] + tokens + [EOS] + padding (77 ids, the tokenizer's own pad token) and the
chunks' hidden states are concatenated along the sequence, so the UNet attends to all of them (as A1111 and
ComfyUI do). SDXL's pooled embedding comes from the first chunk.

Weights (A1111's rule): each token's hidden state is multiplied by its weight, then the chunk is scaled so its
mean equals the unweighted mean. A prompt of one chunk with every weight 1 takes none of these steps and gives
exactly diffusers' own encoding.

clip_skip N (A1111's numbering): use the output of the N-th last layer of each text encoder as loaded; 1 is the
model's standard layer (SD1/SD2: the last, with the final layer norm; SDXL: the penultimate, without it).
"""

from __future__ import annotations

import torch

from .prompts import parse

CHUNK = 75
COMMA_BACKTRACK = 20   # A1111's comma_padding_backtrack: a full chunk breaks after a comma this close to its end


def _split(toks: list[int], weights: list[float], comma: int | None) -> list[tuple[list[int], list[float]]]:
    """One section's tokens in chunks of at most 75 (A1111's rule): a chunk that fills up ends after its last
    comma when that comma is among its last 20 tokens, so a phrase is not cut in two; the rest starts the next."""
    out, start = [], 0
    while len(toks) - start > CHUNK:
        end = cut = start + CHUNK
        for j in range(end - 1, end - 1 - COMMA_BACKTRACK, -1):
            if toks[j] == comma:
                cut = j + 1
                break
        out.append((toks[start:cut], weights[start:cut]))
        start = cut
    out.append((toks[start:], weights[start:]))
    return out


def _chunk_ids(tokenizer, text: str) -> tuple[list[list[int]], list[list[float]]]:
    """(ids, weights) per 77-token chunk of `text`."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    comma_ids = tokenizer(",", add_special_tokens=False, verbose=False).input_ids
    comma = comma_ids[0] if len(comma_ids) == 1 else None   # CLIP's ",</w>": a comma that ends a word
    chunks: list[tuple[list[int], list[float]]] = []
    for part in parse(text):
        toks: list[int] = []
        weights: list[float] = []
        for run, w in part:
            ids = tokenizer(run, add_special_tokens=False, truncation=False, verbose=False).input_ids
            toks += ids
            weights += [w] * len(ids)
        if not toks and chunks:
            continue   # an empty BREAK section adds nothing
        chunks += _split(toks, weights, comma)
    out_ids, out_w = [], []
    for toks, weights in chunks:
        n = CHUNK - len(toks)
        out_ids.append([bos] + toks + [eos] + [pad] * n)
        out_w.append([1.0] + weights + [1.0] + [1.0] * n)
    return out_ids, out_w


def _hidden(text_encoder, ids: torch.Tensor, clip_skip: int, sdxl: bool):
    """(hidden states (n, 77, dim), the encoder's first output) for a batch of chunks."""
    out = text_encoder(ids.to(text_encoder.device), output_hidden_states=True)
    if sdxl:
        return out.hidden_states[-(clip_skip + 1)], out[0]
    if clip_skip <= 1:
        return out[0], out[0]
    final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
    return final_norm(out.hidden_states[-clip_skip]), out[0]


def _weighted(z: torch.Tensor, weights: list[list[float]]) -> torch.Tensor:
    """A1111's rule: scale each token's hidden state by its weight, then restore each chunk's mean."""
    if all(w == 1.0 for row in weights for w in row):
        return z
    w = torch.tensor(weights, dtype=torch.float32, device=z.device)[..., None]
    zf = z.float()
    before = zf.mean(dim=(1, 2), keepdim=True)
    zf = zf * w
    after = zf.mean(dim=(1, 2), keepdim=True)
    after = torch.where(after == 0, torch.ones_like(after), after)   # all weights 0: leave the zeros
    return (zf * (before / after)).to(z.dtype)


def _pad_chunks(ids: list, weights: list, n: int, empty: tuple[list, list]) -> tuple[list, list]:
    while len(ids) < n:
        ids = ids + [empty[0][0]]
        weights = weights + [empty[1][0]]
    return ids, weights


def encode(pairs, prompt: str, negative: str, clip_skip: int = 1, sdxl: bool = False,
           zero_negative: bool = False) -> dict:
    """Embeddings for a prompt and its negative, padded to the same number of chunks.

    pairs: [(tokenizer, text_encoder)] (SD1/SD2: one; SDXL: two, the second with a projection).
    Returns {prompt_embeds, negative_prompt_embeds} (+ pooled ones for SDXL), shaped (1, 77 * chunks, dim)."""
    per = []
    for tokenizer, te in pairs:
        pi, pw = _chunk_ids(tokenizer, prompt)
        ni, nw = _chunk_ids(tokenizer, negative)
        empty = _chunk_ids(tokenizer, "")
        n = max(len(pi), len(ni))
        pi, pw = _pad_chunks(pi, pw, n, empty)
        ni, nw = _pad_chunks(ni, nw, n, empty)
        per.append((te, pi, pw, ni, nw))
    embeds, negs = [], []
    pooled = neg_pooled = None
    dtype = pairs[-1][1].dtype
    for te, pi, pw, ni, nw in per:
        # Prompt and negative in separate calls, as diffusers does, so a plain prompt gives its exact numbers.
        z, first = _hidden(te, torch.tensor(pi), clip_skip, sdxl)
        nz, nfirst = _hidden(te, torch.tensor(ni), clip_skip, sdxl)
        embeds.append(_weighted(z.to(dtype), pw).reshape(1, -1, z.shape[-1]))
        negs.append(_weighted(nz.to(dtype), nw).reshape(1, -1, nz.shape[-1]))
        pooled, neg_pooled = first[:1].to(dtype), nfirst[:1].to(dtype)
    pe = torch.cat(embeds, dim=-1)
    ne = torch.cat(negs, dim=-1)
    out = {"prompt_embeds": pe, "negative_prompt_embeds": ne}
    if sdxl:
        if zero_negative and not negative:
            ne, neg_pooled = torch.zeros_like(pe), torch.zeros_like(pooled)
            out["negative_prompt_embeds"] = ne
        out["pooled_prompt_embeds"] = pooled
        out["negative_pooled_prompt_embeds"] = neg_pooled
    return out
