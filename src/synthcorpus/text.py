"""The text normal forms, one place for each (no I/O, no imports beyond the standard library):

* :func:`clean` -- NFC, every run of whitespace collapsed to one space, stripped: how seed texts and
  benchmark reference items are stored.
* :func:`normalize` -- NFKC, lower case, punctuation removed, single spaces: the form exact dedup hashes,
  MinHash shingles and the decontamination n-gram index compare, so all three agree on what "the same
  text" is.

(Refusal phrases are matched in their own folded form, ``quality.filters.fold_phrase``: it keeps
punctuation, which the opening of a refusal needs.)
"""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """NFC, every run of whitespace (newlines included) collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def normalize(text: str) -> str:
    """Case-, accent-form-, punctuation- and whitespace-insensitive form used for exact dedup."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text)).strip()
