"""Language id (py3langid, model inside the package) on short documents in the five languages we write."""

from __future__ import annotations

import pytest

from synthcorpus.quality.langid import MIN_CONFIDENCE, detect

TEXTS = {
    "en": "Bees carry pollen from one flower to the next, and this is how many plants make their seeds. "
          "Without them, orchards would give far less fruit every summer.",
    "fr": "Les abeilles transportent le pollen d'une fleur à l'autre, et c'est ainsi que beaucoup de plantes "
          "produisent leurs graines. Sans elles, les vergers donneraient bien moins de fruits chaque été.",
    "de": "Bienen tragen den Pollen von einer Blüte zur nächsten, und so bilden viele Pflanzen ihre Samen. "
          "Ohne sie würden die Obstgärten jeden Sommer viel weniger Früchte tragen.",
    "es": "Las abejas llevan el polen de una flor a otra, y así es como muchas plantas producen sus semillas. "
          "Sin ellas, los huertos darían mucha menos fruta cada verano.",
    "it": "Le api portano il polline da un fiore all'altro, ed è così che molte piante producono i loro semi. "
          "Senza di loro, i frutteti darebbero molta meno frutta ogni estate.",
}


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_each_language_is_detected_confidently(language):
    got, prob = detect(TEXTS[language])
    assert got == language and prob >= MIN_CONFIDENCE


def test_languages_are_not_confused_with_each_other():
    detected = {lang: detect(text)[0] for lang, text in TEXTS.items()}
    assert detected == {lang: lang for lang in TEXTS}
