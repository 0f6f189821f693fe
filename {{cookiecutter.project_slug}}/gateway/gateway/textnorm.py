"""The views of a text that the guardrails match on, so that look-alike or invisible
characters cannot hide a term or an entity that the model will still read.

- `term_view` (deny terms): NFKC, case-folded; soft hyphens, joiners and the other
  invisible (default-ignorable) characters removed; zero-width spaces and every run of
  whitespace read as one space. `secret\\u200bproject`, full-width `secret project`,
  `secret  project` and `SECRET pro\\u00adject` all read `secret project`.
- `pii_view` (PII patterns): NFKC, every Unicode decimal digit as its ASCII digit, all
  invisible characters removed (a zero-width space inside an address would otherwise
  split it), runs of spaces and tabs read as one space, line breaks and case kept
  (IBANs are upper case; the patterns allow one separator between groups of digits).

Both are linear in the text: `unicodedata`, `str.translate` and `str.split` only.
"""

from __future__ import annotations

import re
import unicodedata

ZERO_WIDTH_SPACE = "\u200b"

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): characters
# that render as nothing, so a reader, or a model, reads the text around them as one.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),  # Mongolian variation selectors, vowel separator
    (0x200B, 0x200F),  # zero-width space, non-joiner, joiner, direction marks
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement
)
_IGNORABLE: dict[int, None] = {
    code: None for low, high in _IGNORABLE_RANGES for code in range(low, high + 1)
}
# Every decimal digit below U+20000 (no script has any above) as its ASCII digit.
_DIGITS: dict[int, str] = {
    code: str(unicodedata.decimal(chr(code)))
    for code in range(0x80, 0x20000)
    if unicodedata.decimal(chr(code), None) is not None
}
_TERM_TABLE = {**_IGNORABLE, ord(ZERO_WIDTH_SPACE): " "}
_PII_TABLE: dict[int, str | None] = {**_IGNORABLE, **_DIGITS}
# One character class repeated: linear in the text.
_HORIZONTAL_SPACE_RUN = re.compile(r"[^\S\n]+")


def _nfkc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def term_view(text: str) -> str:
    """The text as deny terms are matched against it (see the module docstring)."""
    folded = _nfkc(_nfkc(text).casefold())
    return " ".join(folded.translate(_TERM_TABLE).split())


def pii_view(text: str) -> str:
    """The text as the PII patterns read it (see the module docstring)."""
    plain = _nfkc(text).translate(_PII_TABLE)
    return _HORIZONTAL_SPACE_RUN.sub(" ", plain)
