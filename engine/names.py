"""Names people give things (users, boards, workflows): what is allowed, and when two names are "the same".

A name must read the same everywhere it is shown: no control or invisible format characters (bidi overrides,
zero-width joiners), no line breaks. User names must also not impersonate each other: they are compared after
NFKC normalisation and case folding ("Bob" = "bob" = "ｂｏｂ"), and one name may not mix Latin, Greek and Cyrillic
letters (Cyrillic "о" in "bоb" is the classic look-alike).
"""

from __future__ import annotations

import unicodedata

from .errors import BadRequest

# Unicode categories never allowed in a name: controls, format (invisible), surrogates, private use, unassigned,
# line/paragraph separators.
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_LOOKALIKE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC")


def visible_name(name: str, what: str, field: str = "name", max_len: int = 128) -> str:
    """name without surrounding spaces, or BadRequest naming the field."""
    name = name.strip()
    if not name:
        raise BadRequest(f"a {what} needs a name", details={"field": field})
    if len(name) > max_len:
        raise BadRequest(f"a {what} name has at most {max_len} characters", details={"field": field})
    bad = next((ch for ch in name if unicodedata.category(ch) in _HIDDEN), None)
    if bad is not None:
        raise BadRequest(f"a {what} name cannot contain the invisible or control character U+{ord(bad):04X}",
                         details={"field": field})
    return name


def scripts(name: str) -> set[str]:
    found = set()
    for ch in name:
        if ch.isalpha():
            script = unicodedata.name(ch, "").split(" ")[0]
            if script in _LOOKALIKE_SCRIPTS:
                found.add(script)
    return found


def identity(name: str) -> str:
    """What two user names must not share: NFKC, case-folded."""
    return unicodedata.normalize("NFKC", name).casefold()
