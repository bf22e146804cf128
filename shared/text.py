"""Text every service takes from callers: no control characters, no invisible formatting.

One rule, used by every service's schemas (`SafeText`, `SafeLine`, or `refused_character` in a
validator of its own). A person's name or a service's name with a NUL in it cannot be stored in
PostgreSQL (the database refuses it, and the caller would see a 500); one with a bidirectional
override (U+202E) or a zero-width space shows one thing and compares as another, so "Sam" and
"S\u200bam" would be two people who look the same on screen. Such text is refused with a 422
naming the field, never stored, on SQLite and PostgreSQL alike.

Refused (in a single line of text, such as a name):

- C0 controls U+0000-U+001F (NUL, tab, line feed, escape...), DEL U+007F and C1 controls
  U+0080-U+009F (Unicode category Cc);
- format characters (category Cf): the bidirectional embeddings and overrides U+202A-U+202E and
  isolates U+2066-U+2069, the marks U+200E, U+200F and U+061C, zero-width space U+200B, word
  joiner U+2060, invisible operators U+2061-U+2064, the byte order mark U+FEFF, soft hyphen U+00AD,
  tag characters U+E0001-U+E007F, and the rest of Cf; EXCEPT zero-width non-joiner U+200C and
  zero-width joiner U+200D, which are part of correct spelling in Persian, Indic and other scripts;
- the line and paragraph separators U+2028 and U+2029;
- surrogates (a lone surrogate cannot be encoded for either database) and the noncharacters
  U+FDD0-U+FDEF and U+xxFFFE / U+xxFFFF.

Multi-line free text (`SafeText`, `refused_character(..., multiline=True)`) also allows tab,
line feed and carriage return. Messages name the character's code point, never the text around it.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator

JOINERS = frozenset({"\u200c", "\u200d"})  # ZWNJ, ZWJ: legitimate in several scripts
LINE_BREAKS = frozenset({"\t", "\n", "\r"})  # allowed in multi-line text only
SEPARATORS = frozenset({"\u2028", "\u2029"})


def _noncharacter(code: int) -> bool:
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def is_refused(character: str, *, multiline: bool = False) -> bool:
    """Whether one character is refused in caller text (see the module's list)."""
    if character in JOINERS:
        return False
    if multiline and character in LINE_BREAKS:
        return False
    if character in SEPARATORS or _noncharacter(ord(character)):
        return True
    return unicodedata.category(character) in ("Cc", "Cf", "Cs")


def refused_character(value: str, *, multiline: bool = False) -> str | None:
    """The first refused character of `value`, as its code point and name (e.g. 'U+200B ZERO
    WIDTH SPACE'), or None when the text is clean."""
    for character in value:
        if is_refused(character, multiline=multiline):
            code = ord(character)
            name = unicodedata.name(character, "")
            if not name and unicodedata.category(character) == "Cc":
                name = "control character"
            return f"U+{code:04X} {name}".rstrip()
    return None


def check_text(value: str, *, multiline: bool = False) -> str:
    """`value` unchanged, or ValueError naming the first refused character (not the text)."""
    found = refused_character(value, multiline=multiline)
    if found is not None:
        raise ValueError(
            f"contains a control or invisible formatting character ({found}), which is not allowed"
        )
    return value


def _check_line(value: str) -> str:
    return check_text(value)


def _check_multiline(value: str) -> str:
    return check_text(value, multiline=True)


# Pydantic types: a single line (names, titles, codes typed by people) and multi-line free text.
SafeLine = Annotated[str, AfterValidator(_check_line)]
SafeText = Annotated[str, AfterValidator(_check_multiline)]
