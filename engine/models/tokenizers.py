"""CLIP tokenizer folders for single-file checkpoints, built offline from CLIP's BPE table.

Single-file SD1/SD2/SDXL checkpoints carry no tokenizer. Every CLIP text encoder they use (OpenAI ViT-L/14 in
SD1 and SDXL, OpenCLIP ViT-H in SD2, OpenCLIP ViT-bigG as SDXL's second) shares one BPE vocabulary: the table
`bpe_simple_vocab_16e6.txt.gz` that OpenAI published with CLIP and open_clip ships. vocab.json and merges.txt
follow from it exactly (49,408 tokens, 48,894 merges); the families differ only in the padding token:
OpenAI CLIP pads with <|endoftext|>, the OpenCLIP encoders with "!" (id 0), as in the published SD2 and SDXL
`tokenizer_2` configs.

scripts/setup.sh copies the table out of the `open-clip-torch` wheel on PyPI (without its dependencies) to
engine/configs/tokenizers/; the engine never needs the network for it. A user may instead put complete tokenizer
folders (vocab.json, merges.txt, tokenizer_config.json) in $PAINTBRIDGE_TOKENIZERS/{clip,clip_g}/.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

from ..errors import ModelError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
TOKENIZERS_ENV = "PAINTBRIDGE_TOKENIZERS"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# sha256 of the decompressed table (the same in every open_clip release that ships it).
BPE_SHA256 = "67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8"
N_MERGES = 49152 - 256 - 2   # CLIP keeps the first 48,894 merges of the table
VOCAB_SIZE = 49408
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# kind -> pad token. "clip": OpenAI CLIP ViT-L/14 (SD1, SDXL's first, FLUX's CLIP); "open_clip": OpenCLIP ViT-H
# (SD2) and ViT-bigG (SDXL's second).
PAD = {"clip": EOS, "open_clip": "!"}
SETUP_HINT = "run scripts/setup.sh (it copies the table from the open-clip-torch package on PyPI)"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to one printable unicode character."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _open_clip_dir() -> Path | None:
    """An installed open_clip's folder, found without importing it (it would import torchvision)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def bpe_table_path() -> Path:
    """Where the BPE table is: $PAINTBRIDGE_TOKENIZERS, engine/configs/tokenizers, or an installed open_clip."""
    candidates = []
    if os.environ.get(TOKENIZERS_ENV):
        candidates.append(Path(os.environ[TOKENIZERS_ENV]) / BPE_NAME)
    candidates.append(CONFIGS_DIR / "tokenizers" / BPE_NAME)
    oc = _open_clip_dir()
    if oc is not None:
        candidates.append(oc / BPE_NAME)
    for c in candidates:
        if c.is_file():
            return c
    raise ModelError(
        f"the CLIP tokenizer table {BPE_NAME} is missing (looked in {', '.join(str(c.parent) for c in candidates)}); "
        f"single-file SD/SDXL checkpoints need it: {SETUP_HINT}"
    )


_MERGES_CACHE: list[str] | None = None


def clip_merges() -> list[str]:
    """The 48,894 CLIP merges ("a b" lines), read once from the checked table."""
    global _MERGES_CACHE
    if _MERGES_CACHE is None:
        path = bpe_table_path()
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise ModelError(f"{path} is not a readable gzip BPE table ({e}): {SETUP_HINT}") from e
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != BPE_SHA256:
            raise ModelError(f"{path} is not CLIP's BPE table (its checksum differs): {SETUP_HINT}")
        _MERGES_CACHE = text.split("\n")[1: N_MERGES + 1]
    return _MERGES_CACHE


def clip_vocab(merges: list[str]) -> dict[str, int]:
    """CLIP's token -> id map: bytes, bytes + </w>, each merge's result, then the two special tokens."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split(" ")) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}


def write_clip_tokenizer(dest: Path, kind: str = "clip") -> Path:
    """Write a complete CLIPTokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) for `kind` ("clip" or "open_clip") into `dest`."""
    if kind not in PAD:
        raise ValueError(f"unknown CLIP tokenizer kind {kind!r}; choose one of {tuple(PAD)}")
    merges = clip_merges()
    vocab = clip_vocab(merges)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": PAD[kind]}
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH,
              "do_lower_case": True, "errors": "replace", "add_prefix_space": False}
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return dest


def check_tokenizer_dir(d: Path, what: str) -> None:
    """A tokenizer folder must be complete: transformers would otherwise fail deep inside (an unbounded
    model_max_length ends in OverflowError). ModelError names what is missing."""
    d = Path(d)
    files = {f.name for f in d.iterdir() if f.is_file()} if d.is_dir() else set()
    if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files and "spiece.model" not in files:
        raise ModelError(f"{what} ({d}) is incomplete: it needs vocab.json and merges.txt (CLIP) or tokenizer.json; "
                         f"it has {sorted(files) or 'nothing'}")
    if "tokenizer_config.json" not in files:
        raise ModelError(f"{what} ({d}) is incomplete: tokenizer_config.json is missing (it sets model_max_length, "
                         "77 for CLIP)")
    try:
        cfg = json.loads((d / "tokenizer_config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{what} ({d}): tokenizer_config.json is unreadable: {e}") from e
    mml = cfg.get("model_max_length") if isinstance(cfg, dict) else None
    if not isinstance(mml, int) or not 1 <= mml <= 1_000_000:
        raise ModelError(f"{what} ({d}): tokenizer_config.json must set model_max_length (77 for CLIP, 512 for T5), "
                         f"found {mml!r}")


def user_tokenizer_dir(kind: str) -> Path | None:
    """A complete tokenizer folder the user put in $PAINTBRIDGE_TOKENIZERS/<kind>/, if any (checked)."""
    root = os.environ.get(TOKENIZERS_ENV)
    if not root:
        return None
    d = Path(root) / kind
    if not d.is_dir() or not any(d.iterdir()):
        return None
    check_tokenizer_dir(d, f"the {kind} tokenizer folder in ${TOKENIZERS_ENV}")
    return d


# FLUX's T5 tokenizer is a SentencePiece model that cannot be derived from anything on PyPI: fetched once from the
# hub (the Apache-2.0 FLUX.1-schnell repo, not gated) when the machine is online, then kept in the data dir.
T5_REPO = "black-forest-labs/FLUX.1-schnell"
T5_FILES = ("tokenizer.json", "tokenizer_config.json")


def t5_tokenizer_dir(cache_dir: Path | None) -> Path:
    """A complete T5 tokenizer folder: from the cache, else fetched into it now; ModelError when offline."""
    if cache_dir is None:
        cache_dir = Path(os.environ.get("PAINTBRIDGE_CACHE", Path.home() / ".cache" / "paintbridge"))
    dest = Path(cache_dir) / "tokenizers" / "t5"
    if all((dest / f).is_file() for f in T5_FILES):
        return dest
    hint = (f"FLUX single-file checkpoints need the T5 tokenizer, which Paintbridge fetches once from the Hugging "
            f"Face hub ({T5_REPO}, tokenizer_2/) into {dest}. Connect this machine to the internet once, or put "
            f"{' + '.join(T5_FILES)} in ${TOKENIZERS_ENV}/t5/, or use the model as a diffusers folder")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelError(f"{hint} (HF_HUB_OFFLINE is set)")
    import tempfile

    from huggingface_hub import hf_hub_download

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="t5-", dir=dest.parent) as tmp:
        staged = Path(tmp) / "t5"
        staged.mkdir()
        try:
            for f in T5_FILES:
                got = hf_hub_download(T5_REPO, f, subfolder="tokenizer_2", cache_dir=Path(tmp) / "hub")
                shutil.copyfile(got, staged / f)
        except Exception as e:   # offline, DNS, proxy, HTTP errors: one message that says what to do
            raise ModelError(f"{hint} (fetching failed: {type(e).__name__}: {str(e)[:200]})") from e
        check_tokenizer_dir(staged, "the fetched T5 tokenizer")
        if dest.exists():
            shutil.rmtree(dest)
        staged.replace(dest)   # the whole folder appears at once
    return dest


def main(argv=None) -> int:
    """`python -m engine.models.tokenizers DEST KIND`: write a tokenizer folder (for inspection)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m engine.models.tokenizers DEST clip|open_clip", file=sys.stderr)
        return 2
    print(write_clip_tokenizer(Path(args[0]), args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
