from __future__ import annotations

from synthcorpus.quality.diversity import near_duplicates, opening, opening_report

BASE = ("Bees carry pollen between flowers so that plants can make seeds and fruit; many of the crops we "
        "eat every day depend on these small insects and on the wild flowers that feed them in spring. Farmers "
        "who keep hedges and meadows along their fields see more visits from bumblebees, solitary bees and "
        "hoverflies, and their orchards set more fruit. Cities can help too: window boxes, parks left to grow "
        "a little wild and fewer pesticides give pollinators food and shelter from early spring to late autumn.")


def test_opening_is_first_eight_lowercased_words():
    assert opening("Once upon a time, in a land far, far away there lived") == "once upon a time in a land far"


def test_opening_report_shares():
    texts = ["Once upon a time there was a fox who ran."] * 3 + [f"Doc {i} starts differently here and now ok" for i in range(7)]
    r = opening_report(texts)
    assert r["documents"] == 10 and r["distinct_openings"] == 8
    assert r["top"][0]["count"] == 3 and r["max_opening_share"] == 0.3


def test_near_duplicates_found_distinct_kept():
    edited = BASE.replace("small insects", "tiny insects")
    other = "The telegraph sent coded messages over long wires in minutes and changed how newspapers reported events."
    assert near_duplicates([BASE, other, edited]) == [2]
    assert near_duplicates([BASE, other]) == []
    # Groups keep otherwise identical texts apart (e.g. different templates or audiences).
    assert near_duplicates([BASE, BASE], groups=["a", "b"]) == []
    assert near_duplicates([BASE, BASE], groups=["a", "a"]) == [1]
