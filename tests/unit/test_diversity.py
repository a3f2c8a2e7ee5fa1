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


def _brute_force(texts, groups, threshold=0.8):
    """Exact Jaccard of every earlier pair in the same group: what near_duplicates must find."""
    from synthcorpus.quality.diversity import _shingles

    sets = [_shingles(t) for t in texts]
    return [i for i in range(len(texts)) if any(
        groups[j] == groups[i] and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold for j in range(i))]


def test_near_duplicates_match_exact_jaccard_across_chunks_and_groups(monkeypatch):
    """Chunked signatures (chunks of 7 here), groups folded into the band keys, buckets as sorted runs: the
    same answer as checking every earlier pair exactly, on texts whose near-copies are far apart."""
    import random

    from synthcorpus.quality import diversity

    monkeypatch.setattr(diversity, "CHUNK", 7)
    rng = random.Random(5)
    words = BASE.split()
    texts, groups = [], []
    for i in range(120):
        if i >= 10 and rng.random() < 0.35:
            j = rng.randrange(i)  # a near-copy of an earlier text (one word changed) or an exact one
            w = texts[j].split()
            if rng.random() < 0.5:
                w[rng.randrange(len(w))] = "changed"
            texts.append(" ".join(w))
            groups.append(groups[j] if rng.random() < 0.8 else rng.choice("abc"))
        else:
            texts.append(" ".join(rng.sample(words, len(words))))
            groups.append(rng.choice("abc"))
    expected = _brute_force(texts, groups)
    assert len(expected) > 20
    assert diversity.near_duplicates(texts, groups) == expected
    assert diversity.near_duplicates(texts) == _brute_force(texts, [""] * len(texts))
    assert diversity.near_duplicates([]) == []
