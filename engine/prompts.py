"""Prompt syntax people write in A1111/ComfyUI: attention weights and BREAK. Pure Python, no torch.

    (word)          weight x1.1; nested ((word)) x1.21, and so on
    (phrase:1.3)    weight x1.3 (any number; a malformed one is text)
    [word]          weight /1.1
    \\( \\) \\[ \\] \\\\   a literal bracket / backslash
    BREAK           (upper case, a word of its own) starts a new 75-token chunk
    <name>          a textual-inversion embedding (expanded before parsing, engine/models/patch.py); weights apply

Malformed syntax never fails: a bracket without its partner is kept as text, and its contents keep the weight
they had outside it. Weights multiply through nesting and the result is clamped to [MIN_WEIGHT, MAX_WEIGHT].
How weights act on the text encoder's output is engine/conditioning.py's business (see protocol/SPEC.md).
"""

from __future__ import annotations

import re

MIN_WEIGHT = 0.0
MAX_WEIGHT = 3.0
PAREN = 1.1
BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")
# A token of the syntax: an escape, a bracket, ":number)" closing a weighted group, or a run of plain text.
_TOKEN_RE = re.compile(r"\\[()\[\]\\]|[()\[\]]|:\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*\)|[^\\()\[\]:]+|[\\:]")
_WEIGHT_RE = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)")

Chunk = list[tuple[str, float]]   # (text, weight) runs between BREAKs


def parse(prompt: str) -> list[Chunk]:
    """Split `prompt` at BREAK and into runs of text with one weight each.

    >>> parse("a (red:1.5) cat BREAK [dog]")
    [[('a ', 1.0), ('red', 1.5), (' cat', 1.0)], [('dog', 0.9090909090909091)]]
    """
    # Each item: [text, weight, opener]; opener is "(" / "[" for a bracket not yet closed, else None.
    items: list[list] = []
    open_at: list[int] = []   # indices in items of unclosed openers, innermost last

    def close(kind: str, factor: float) -> bool:
        for j in range(len(open_at) - 1, -1, -1):
            if items[open_at[j]][2] == kind:
                if j != len(open_at) - 1:
                    return False   # "( [ )": the innermost open bracket is another kind; take ")" literally
                start = open_at.pop()
                items.pop(start)
                for it in items[start:]:
                    it[1] *= factor
                return True
        return False

    for m in _TOKEN_RE.finditer(prompt or ""):
        tok = m.group(0)
        if tok[0] == "\\" and len(tok) == 2:
            items.append([tok[1], 1.0, None])
        elif tok in ("(", "["):
            open_at.append(len(items))
            items.append([tok, 1.0, tok])
        elif tok == ")":
            if not close("(", PAREN):
                items.append([tok, 1.0, None])
        elif tok == "]":
            if not close("[", 1.0 / PAREN):
                items.append([tok, 1.0, None])
        elif tok.startswith(":") and tok.endswith(")"):
            w = float(_WEIGHT_RE.fullmatch(tok).group(1))
            if not close("(", w):
                items.append([tok, 1.0, None])
        else:
            items.append([tok, 1.0, None])
    # Unclosed openers are text; clamp; split at BREAK; merge neighbours of equal weight.
    chunks: list[Chunk] = [[]]
    for text, weight, _ in items:
        weight = min(max(weight, MIN_WEIGHT), MAX_WEIGHT)
        parts = BREAK_RE.split(text)
        for i, part in enumerate(parts):
            if i:
                chunks.append([])
            if not part:
                continue
            cur = chunks[-1]
            if cur and cur[-1][1] == weight:
                cur[-1] = (cur[-1][0] + part, weight)
            else:
                cur.append((part, weight))
    return chunks


def plain(prompt: str) -> str:
    """The prompt's words without weight syntax (for encoders that take no weights, like FLUX's)."""
    return " ".join("".join(t for t, _ in c).strip() for c in parse(prompt)).strip()


def is_plain(chunks: list[Chunk]) -> bool:
    """One chunk, every weight 1: encoding it is exactly the standard (diffusers) encoding."""
    return len(chunks) == 1 and all(w == 1.0 for _, w in chunks[0])
