"""Language identification with py3langid (its model ships inside the PyPI package; nothing is
downloaded), restricted to the languages synthcorpus writes."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..spec import LANGUAGES

MIN_CONFIDENCE = 0.9  # below this the text is too short or mixed to call it the wrong language


@lru_cache(maxsize=1)
def _identifier() -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise ImportError("language id needs py3langid: pip install py3langid") from None
    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LANGUAGES))
    return ident


def detect(text: str) -> tuple[str, float]:
    """(language code, probability) among en, fr, de, es, it."""
    lang, prob = _identifier().classify(text)
    return lang, float(prob)
