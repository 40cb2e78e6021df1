"""Prompt syntax (engine/prompts.py), sampler names (engine/samplers.py) and the CLIP tokenizers built from CLIP's
BPE table (engine/models/tokenizers.py). No models, no engine: fast."""

from __future__ import annotations

import gzip
import json

import pytest
import regex

from engine import prompts, samplers
from engine.errors import ModelError
from engine.models import tokenizers
from engine.models.loader import _write_config_dir

# (prompt, expected chunks). Weights: (x) *1.1, [x] /1.1, (x:w) *w, nesting multiplies, clamp to [0, 3].
VECTORS = [
    ("a cat", [[("a cat", 1.0)]]),
    ("(word)", [[("word", 1.1)]]),
    ("((word))", [[("word", 1.1 * 1.1)]]),
    ("(((word)))", [[("word", 1.1 ** 3)]]),
    ("[word]", [[("word", 1 / 1.1)]]),
    ("[[word]]", [[("word", 1 / 1.1 / 1.1)]]),
    ("(a red phrase:1.3)", [[("a red phrase", 1.3)]]),
    ("( spaced : 0.5 )", [[(" spaced ", 0.5)]]),
    ("(a:1.0)", [[("a", 1.0)]]),
    ("a (b:1.5) c", [[("a ", 1.0), ("b", 1.5), (" c", 1.0)]]),
    ("(x (y:2) z)", [[("x ", 1.1), ("y", 2.2), (" z", 1.1)]]),
    ("([a]:1.5)", [[("a", 1.5 / 1.1)]]),
    (r"\(literal\) \[too\]", [[("(literal) [too]", 1.0)]]),
    (r"(\(in a group\))", [[("(in a group)", 1.1)]]),
    (r"back\\slash", [[("back\\slash", 1.0)]]),
    ("(loud:9)", [[("loud", 3.0)]]),
    ("(gone:-2)", [[("gone", 0.0)]]),
    ("(unclosed", [[("(unclosed", 1.0)]]),
    ("closed)", [[("closed)", 1.0)]]),
    ("[open", [[("[open", 1.0)]]),
    ("a ((b) c", [[("a (", 1.0), ("b", 1.1), (" c", 1.0)]]),
    ("[a (b] c)", [[("[a ", 1.0), ("b] c", 1.1)]]),
    ("(a:1.2.3)", [[("a:1.2.3", 1.1)]]),
    ("ratio 16:9", [[("ratio 16:9", 1.0)]]),
    ("one BREAK two", [[("one", 1.0)], [("two", 1.0)]]),
    ("(one BREAK two:1.2)", [[("one", 1.2)], [("two", 1.2)]]),
    ("BREAKING news", [[("BREAKING news", 1.0)]]),
    ("break lowercase", [[("break lowercase", 1.0)]]),
    ("<pbemb1x0> <pbemb1x1> (<pbemb2x0>:1.4)", [[("<pbemb1x0> <pbemb1x1> ", 1.0), ("<pbemb2x0>", 1.4)]]),
    ("", [[]]),
]


@pytest.mark.parametrize("prompt,want", VECTORS)
def test_parser_vectors(prompt, want):
    got = prompts.parse(prompt)
    assert [[t for t, _ in c] for c in got] == [[t for t, _ in c] for c in want]
    assert [w for c in got for _, w in c] == pytest.approx([w for c in want for _, w in c])


def test_parser_never_fails_on_junk():
    import random

    rng = random.Random(0)
    alphabet = "()[]:\\ab1.2 BREAK-+<>"
    for _ in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        chunks = prompts.parse(s)
        for c in chunks:
            for text, w in c:
                assert text and prompts.MIN_WEIGHT <= w <= prompts.MAX_WEIGHT
        # no character of the prompt is lost except syntax: brackets that closed, escapes, weights, BREAK
        assert len("".join(t for c in chunks for t, _ in c)) <= len(s)


def test_plain_text_for_encoders_without_weights():
    assert prompts.plain("a (red:1.4) [fox] BREAK in snow") == "a red fox in snow"


# ---- samplers ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,want", [
    ("Euler", ("euler", "default")), ("Euler a", ("euler_a", "default")), ("euler_ancestral", ("euler_a", "default")),
    ("Heun", ("heun", "default")), ("DPM++ 2M", ("dpmpp_2m", "default")),
    ("DPM++ 2M Karras", ("dpmpp_2m", "karras")), ("dpmpp_2m_karras", ("dpmpp_2m", "karras")),
    ("DPM++ 2M SDE Karras", ("dpmpp_2m_sde", "karras")), ("DPM++ SDE Karras", ("dpmpp_sde", "karras")),
    ("DDIM", ("ddim", "default")), ("UniPC", ("unipc", "default")), ("uni_pc", ("unipc", "default")),
    ("LCM", ("lcm", "default")), ("TCD", ("tcd", "default")),
])
def test_sampler_names(name, want):
    assert samplers.resolve(name) == want


def test_sampler_schedules_and_refusals():
    assert samplers.resolve("Euler", "sgm_uniform") == ("euler", "trailing")
    assert samplers.resolve("DPM++ 2M", "karras") == ("dpmpp_2m", "karras")
    with pytest.raises(ValueError, match="karras schedule does not apply to DDIM"):
        samplers.resolve("DDIM", "karras")
    with pytest.raises(ValueError, match="DPM\\+\\+ 2M Karras"):   # the message lists the labels
        samplers.resolve("PLMS")
    with pytest.raises(ValueError, match="unknown schedule"):
        samplers.resolve("Euler", "exponential")
    pub = samplers.public()
    assert {"id": "dpmpp_2m_karras", "label": "DPM++ 2M Karras", "schedules": ["karras"]} in pub["samplers"]
    assert pub["schedules"] == ["default", "karras", "trailing"]
    # what nodes.list says a sampler takes is exactly what resolve() accepts (a _karras id: its own schedule)
    for entry in pub["samplers"]:
        for schedule in pub["schedules"]:
            if schedule in entry["schedules"]:
                assert samplers.resolve(entry["id"], schedule)[1] == schedule
            elif not entry["id"].endswith("_karras"):
                with pytest.raises(ValueError):
                    samplers.resolve(entry["id"], schedule)


# ---- tokenizers ----------------------------------------------------------------------------------------------
def _reference_clip_ids(text: str) -> list[int]:
    """CLIP's own tokenization, written from its description (byte-level BPE over the published table), as an
    independent check of the folders we build and of transformers reading them."""
    lines = gzip.decompress(tokenizers.bpe_table_path().read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1: 49152 - 256 - 2 + 1]]
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    byte_map, extra = {}, 0
    for b in range(256):
        if b in printable:
            byte_map[b] = chr(b)
        else:
            byte_map[b] = chr(256 + extra)
            extra += 1
    alphabet = [byte_map[b] for b in printable] + [byte_map[b] for b in range(256) if b not in printable]
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + ["<|startoftext|>",
                                                                                      "<|endoftext|>"]
    encoder = {t: i for i, t in enumerate(vocab)}
    ranks = {m: i for i, m in enumerate(merges)}

    def bpe(token):
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, _ = min(pairs)
            if rank == 1 << 30:
                break
            first, second = merges[rank]
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    out.append(first + second)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return word

    pat = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
                        r"[^\s\p{L}\p{N}]+", regex.IGNORECASE)
    ids = [encoder["<|startoftext|>"]]
    for tok in pat.findall(" ".join(text.split()).lower()):
        ids += [encoder[t] for t in bpe("".join(byte_map[b] for b in tok.encode("utf-8")))]
    return ids + [encoder["<|endoftext|>"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {k: tokenizers.write_clip_tokenizer(root / k, k) for k in ("clip", "open_clip")}


PROMPTS = ["a photo of a cat", "masterpiece, best quality, 1girl, looking at viewer",
           "An astronaut riding a horse on Mars, 4k, HDR!!", "naïve café 東京 — it's 3.5x bigger; don't",
           "   lots   of\tspace\n", "photorealistic portrait of an old fisherman (weathered skin:1.2)"]


def test_clip_tokenizer_matches_clip(built):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(built["clip"])
    assert len(tok) == tokenizers.VOCAB_SIZE == 49408
    assert len(tokenizers.clip_merges()) == 48894
    assert tok.model_max_length == 77
    # the published CLIP ViT-L/14 ids (its model card's example)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    for p in PROMPTS:
        assert tok(p).input_ids == _reference_clip_ids(p), p
    merges = (built["clip"] / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    assert len(json.loads((built["clip"] / "vocab.json").read_text())) == 49408


def test_padding_per_family(built):
    from transformers import CLIPTokenizer

    clip = CLIPTokenizer.from_pretrained(built["clip"])
    ope = CLIPTokenizer.from_pretrained(built["open_clip"])
    # OpenAI CLIP pads with <|endoftext|>; OpenCLIP (SD2, SDXL's second encoder) with "!" (id 0)
    assert clip("a cat", padding="max_length", max_length=8).input_ids == [49406, 320, 2368, 49407] + [49407] * 4
    assert ope("a cat", padding="max_length", max_length=8).input_ids == [49406, 320, 2368, 49407] + [0] * 4
    assert clip("x" * 500, truncation=True, max_length=77).input_ids[-1] == 49407


@pytest.mark.parametrize("family,keys,want", [
    ("sd1", {}, {"tokenizer": 49407}),
    ("sd2", {}, {"tokenizer": 0}),
    ("sdxl", {}, {"tokenizer": 49407, "tokenizer_2": 0}),
])
def test_single_file_config_folder_has_complete_tokenizers(tmp_path, monkeypatch, family, keys, want):
    from transformers import CLIPTokenizer

    monkeypatch.delenv(tokenizers.TOKENIZERS_ENV, raising=False)
    _write_config_dir(tmp_path, family, {}, keys, "x.safetensors")
    for sub, pad in want.items():
        tokenizers.check_tokenizer_dir(tmp_path / sub, sub)
        tok = CLIPTokenizer.from_pretrained(tmp_path / sub)
        assert tok.pad_token_id == pad and tok.model_max_length == 77 and len(tok) == 49408
        # the text encoder config shipped for this family has the same vocabulary size
        te = "text_encoder" if sub == "tokenizer" else "text_encoder_2"
        assert json.loads((tmp_path / te / "config.json").read_text())["vocab_size"] == 49408


def test_half_complete_user_tokenizer_folder_is_a_clear_error(tmp_path, monkeypatch, built):
    user = tmp_path / "user"
    (user / "clip").mkdir(parents=True)
    for f in ("vocab.json", "merges.txt"):   # what the old error message asked for, and no more
        (user / "clip" / f).write_bytes((built["clip"] / f).read_bytes())
    monkeypatch.setenv(tokenizers.TOKENIZERS_ENV, str(user))
    with pytest.raises(ModelError, match="tokenizer_config.json is missing"):
        _write_config_dir(tmp_path / "cfg", "sd1", {}, {}, "x.safetensors")
    (user / "clip" / "tokenizer_config.json").write_text(json.dumps({"pad_token": "!"}))
    with pytest.raises(ModelError, match="must set model_max_length"):
        _write_config_dir(tmp_path / "cfg2", "sd1", {}, {}, "x.safetensors")
    (user / "clip" / "vocab.json").unlink()
    with pytest.raises(ModelError, match="needs vocab.json and merges.txt"):
        _write_config_dir(tmp_path / "cfg3", "sd1", {}, {}, "x.safetensors")


@pytest.mark.slow   # builds a demo model with torch
def test_diffusers_folder_with_incomplete_tokenizer_is_a_clear_error(tmp_path):
    from engine.models.demo import make_demo
    from engine.models.loader import load_model

    path = make_demo(tmp_path, "sd15")
    (path / "tokenizer" / "tokenizer_config.json").unlink()
    with pytest.raises(ModelError, match="tokenizer_config.json is missing"):
        load_model(path)


def test_missing_or_wrong_bpe_table(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizers, "CONFIGS_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(tokenizers, "_MERGES_CACHE", None)
    monkeypatch.setattr(tokenizers, "_open_clip_dir", lambda: None)
    monkeypatch.delenv(tokenizers.TOKENIZERS_ENV, raising=False)
    with pytest.raises(ModelError, match="run scripts/setup.sh"):
        tokenizers.write_clip_tokenizer(tmp_path / "t", "clip")
    monkeypatch.setenv(tokenizers.TOKENIZERS_ENV, str(tmp_path))
    (tmp_path / tokenizers.BPE_NAME).write_bytes(gzip.compress(b"#version: 0.2\na b\n"))
    with pytest.raises(ModelError, match="checksum differs"):
        tokenizers.write_clip_tokenizer(tmp_path / "t", "clip")
    (tmp_path / tokenizers.BPE_NAME).write_bytes(b"not gzip")
    with pytest.raises(ModelError, match="not a readable gzip"):
        tokenizers.write_clip_tokenizer(tmp_path / "t", "clip")


def test_flux_t5_tokenizer_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="fetches once from the Hugging Face hub.*HF_HUB_OFFLINE"):
        tokenizers.t5_tokenizer_dir(tmp_path / "cache")
    # once cached (as a fetch leaves it), no network is needed
    d = tmp_path / "cache" / "tokenizers" / "t5"
    d.mkdir(parents=True)
    for f in tokenizers.T5_FILES:
        (d / f).write_text("{}")
    assert tokenizers.t5_tokenizer_dir(tmp_path / "cache") == d


@pytest.mark.slow   # starts a local hub stand-in and huggingface_hub
def test_flux_t5_tokenizer_fetched_once_from_the_hub(tmp_path):
    """The hub stood in for by a local server answering the one route hf_hub_download uses (HF_ENDPOINT)."""
    import hashlib
    import os
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from engine.models.demo import t5_demo_tokenizer

    src = tmp_path / "t5-src"
    t5_demo_tokenizer().save_pretrained(src)
    files = {f"/{tokenizers.T5_REPO}/resolve/main/tokenizer_2/{f}": (src / f).read_bytes()
             for f in tokenizers.T5_FILES}
    hits = []

    class Hub(BaseHTTPRequestHandler):
        def _answer(self, body: bool):
            data = files.get(self.path)
            hits.append((self.command, self.path))
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._answer(False)

        def do_GET(self):
            self._answer(True)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = ("import sys; from pathlib import Path; from engine.models.tokenizers import t5_tokenizer_dir; "
            "from transformers import AutoTokenizer; d = t5_tokenizer_dir(Path(sys.argv[1])); "
            "print(d); print(AutoTokenizer.from_pretrained(d)('a cat').input_ids)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(tokenizers.CONFIGS_DIR.parents[1]))
    try:
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        lines = run.stdout.strip().splitlines()
        want = t5_demo_tokenizer()("a cat").input_ids
        assert lines[0] == str(tmp_path / "cache" / "tokenizers" / "t5") and lines[1] == str(want)
        assert set(files) <= {p for _, p in hits}
        assert not list((tmp_path / "cache" / "tokenizers").glob("t5-*"))   # no staging left behind
        # the second time: from the cache, offline, not a single request
        hits.clear()
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")],
                             env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        assert not [h for h in hits if "tokenizer" in h[1]]
        # a hub without the files: a clear error, nothing cached
        files.clear()
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache2")], env=env, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode != 0 and "fetches once from the Hugging Face hub" in run.stderr
        assert not (tmp_path / "cache2" / "tokenizers" / "t5").exists()
    finally:
        server.shutdown()
