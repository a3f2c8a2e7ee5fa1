"""judge_eval: how well the LLM judge ranks good documents above planted bad ones (issue 14, "Evidence").

A planted set, written here: 8 good English documents (80-150 words; 4 for young children, 4 for college
students), each with its request -- topic, format, audience and the request text ("prompt") rendered from
the pipeline's own format template (``include/prompts/en/<format>.j2``, outline seed) -- and bad variants
derived from them, per defect:

- ``off_topic``: a good text paired with another item's request (same audience group, other topic);
- ``wrong_audience``: a college-level text under the same request re-targeted to young children;
- ``shuffled``: the text's sentences shuffled with a fixed seed;
- ``wrong_language``: a French or German translation of a good text under its English request;
- ``repetitive``: the first three sentences repeated until the original length.

Every document is judged as the judge stage does it: ``include/prompts/en/judge.j2`` rendered with the
stage's variables (document/request truncated with ``synthcorpus.judge.words`` at the ``JudgeSpec``
defaults), ``synthcorpus.judge.judge_one`` with ``--retries`` re-asks (default 1), max_tokens 96,
temperature 0. Reported per defect: AUC of ``score_overall`` (goods vs that defect's variants;
Mann-Whitney, ties count half; an unscored document counts as the lowest score, 0, and the share
unscored is reported beside it; also the AUC among scored documents only), the share of replies that
parse, mean completion tokens and seconds per judgement; and overall (goods vs every bad variant).
Printed as a table; JSON (with every reply) to ``.artifacts/bench/judge_eval.json``.

Model: ``--model PATH.gguf`` or ``$SYNTHCORPUS_JUDGE_MODEL``, default the bundled SmolLM2-135M
(``smollm2-135m-instruct``), llama.cpp, offline. Benchmarks never assert.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_DIR = ROOT / "include" / "prompts"
OUT = ROOT / ".artifacts" / "bench" / "judge_eval.json"
MODEL_ENV = "SYNTHCORPUS_JUDGE_MODEL"
BUNDLED = "smollm2-135m-instruct"
DEFECTS = ("off_topic", "wrong_audience", "shuffled", "wrong_language", "repetitive")
MAX_TOKENS, TEMPERATURE, N_CTX = 96, 0.0, 2048
SHUFFLE_SEED = 14

# The good documents. Each: its request (outline seed: subject/course/unit + description, topic, format,
# audience) and its text.
ITEMS: list[dict[str, str]] = [
    {"id": "bees", "subject": "Biology", "course": "Introduction to Ecology", "unit": "Pollination",
     "topic": "How bees help flowers", "format": "textbook", "audience": "young_children",
     "extract": "Bees carry pollen between flowers, which lets plants make seeds and fruit.",
     "text": "Bees are small insects that fly from flower to flower. Inside each flower there is a sweet juice "
             "called nectar, and bees drink it to get energy. When a bee climbs into a flower, a yellow dust called "
             "pollen sticks to its fuzzy body. Then the bee flies to the next flower, and some of the pollen falls "
             "off there. Flowers need pollen from other flowers to make seeds. The seeds can grow into new plants "
             "next spring. So when a bee looks for food, it also helps the flowers without knowing it. You can "
             "watch this in a garden or a park on a sunny day. Look closely and you may see yellow pollen on a "
             "bee's legs. Can you name a flower that you have seen a bee visit?"},
    {"id": "teeth", "subject": "Health", "course": "Healthy Habits", "unit": "Brushing teeth",
     "topic": "Why we brush our teeth", "format": "blog_post", "audience": "young_children",
     "extract": "Germs in the mouth feed on sugar and make a sticky layer that can cause holes in teeth; brushing removes it.",
     "text": "Every morning and every night, it is time to brush your teeth. Why do we do it? Tiny germs live in "
             "your mouth, and they love the sugar from sweets and juice. The germs make a sticky layer on your "
             "teeth. If it stays there, it can make small holes in your teeth that hurt. Brushing sweeps the "
             "sticky layer away. Use a small drop of toothpaste and brush every tooth, the front, the back and the "
             "top. Brush for about two minutes, as long as a short song. Do not forget to spit out the toothpaste "
             "when you finish. Clean teeth help you chew your food and smile big. What song could you sing while "
             "you brush?"},
    {"id": "rain", "subject": "Biology", "course": "Introduction to Ecology", "unit": "The water cycle",
     "topic": "Where rain comes from", "format": "textbook", "audience": "young_children",
     "extract": "Water evaporates from oceans and lakes, condenses into clouds, falls as rain or snow, and flows back.",
     "text": "Have you ever wondered where rain comes from? It starts with water in seas, lakes and puddles. When "
             "the sun shines, it warms the water. Some of the water turns into tiny drops that are too small to "
             "see, and they float up into the air. High in the sky the air is cold. There the tiny drops join "
             "together and make clouds. When the drops in a cloud get big and heavy, they fall down as rain. The "
             "rain fills the lakes and the sea again, and the trip starts over. This never-ending trip is called "
             "the water cycle. You can see a small part of it at home when a cold glass gets wet on the outside. "
             "Where do you think a puddle goes on a sunny day?"},
    {"id": "seeds", "subject": "Biology", "course": "Plants Around Us", "unit": "From seed to plant",
     "topic": "How a seed grows into a plant", "format": "blog_post", "audience": "young_children",
     "extract": "A seed needs water, air and warmth to sprout; a root grows down, a shoot grows up and leaves make food.",
     "text": "A seed looks small and quiet, but a baby plant is sleeping inside it. To wake up, the seed needs "
             "water, air and a warm place. Put a bean seed in a cup of soil and give it a little water every day. "
             "After a few days the seed cracks open. First a tiny root pushes down into the soil to drink water. "
             "Then a green shoot grows up toward the light. Soon the shoot opens its first small leaves. The leaves "
             "use sunlight to make food for the plant. Every day the plant grows a little taller. You can measure "
             "it with a ruler and draw a picture of it each week. What do you think would happen if the cup had no "
             "water?"},
    {"id": "interest", "subject": "Economics", "course": "Personal Finance", "unit": "Compound interest",
     "topic": "Compound interest", "format": "textbook", "audience": "college_students",
     "extract": "Interest earned on interest makes savings and debts grow exponentially with time.",
     "text": "Compound interest is interest computed on both the principal and the interest already accumulated. "
             "If a principal P earns an annual rate r compounded n times per year, its value after t years is "
             "P(1 + r/n)^(nt). For example, 1,000 dollars at 6 percent compounded monthly grows to about 1,819 "
             "dollars after ten years, whereas simple interest would yield only 1,600 dollars. The gap widens with "
             "time because growth is exponential rather than linear. As n tends to infinity, the formula converges "
             "to continuous compounding, P times e^(rt). A common misconception is that the compounding frequency "
             "matters as much as the rate. In fact, moving from annual to daily compounding at 6 percent raises the "
             "effective annual rate only from 6.00 to about 6.18 percent. The rate and the time horizon dominate "
             "the outcome."},
    {"id": "friction", "subject": "Physics", "course": "Everyday Physics", "unit": "Friction",
     "topic": "Friction", "format": "textbook", "audience": "college_students",
     "extract": "Friction is the force that resists sliding between surfaces; it lets us walk and brake.",
     "text": "Friction is the contact force that opposes the relative motion, or attempted motion, of two "
             "surfaces. In the Coulomb model, the maximum static friction equals the coefficient of static friction "
             "times the normal force, and kinetic friction equals the kinetic coefficient times the normal force. "
             "Consider a 10 kg crate on a level floor with a static coefficient of 0.40. The normal force is about "
             "98 newtons, so a horizontal push must exceed roughly 39 newtons before the crate moves. Once it "
             "slides with a kinetic coefficient of 0.30, about 29 newtons keep it moving at constant velocity. A "
             "common misconception is that friction depends on the area of contact. To first approximation it does "
             "not, because a larger apparent area spreads the same load over more microscopic junctions, each "
             "carrying less pressure."},
    {"id": "photosynthesis", "subject": "Biology", "course": "Cell Biology", "unit": "Photosynthesis",
     "topic": "The light reactions of photosynthesis", "format": "blog_post", "audience": "college_students",
     "extract": "In the thylakoids, light energy splits water and drives the synthesis of ATP and NADPH.",
     "text": "The light-dependent reactions of photosynthesis take place in the thylakoid membranes of the "
             "chloroplast. Photosystem II absorbs light and uses the energy to split water, releasing oxygen, "
             "protons and electrons. The electrons pass along an electron transport chain to photosystem I, and the "
             "energy released pumps protons into the thylakoid lumen. The resulting proton gradient drives ATP "
             "synthase, which produces ATP by chemiosmosis. At photosystem I, a second photon excites the electrons "
             "again, and they finally reduce NADP+ to NADPH. Both ATP and NADPH then power the Calvin cycle in the "
             "stroma. A frequent misconception is that the oxygen released by plants comes from carbon dioxide. "
             "Isotope-labelling experiments with heavy oxygen showed that it comes from water. Roughly eight "
             "photons are needed for each molecule of oxygen produced."},
    {"id": "elasticity", "subject": "Economics", "course": "Principles of Microeconomics", "unit": "Elasticity",
     "topic": "Price elasticity of demand", "format": "textbook", "audience": "college_students",
     "extract": "Elasticity measures how much the quantity demanded responds to a change in price.",
     "text": "Price elasticity of demand measures how strongly the quantity demanded responds to a change in "
             "price. It is defined as the percentage change in quantity divided by the percentage change in price. "
             "Using the midpoint method, suppose a cinema raises its ticket price from 8 to 10 dollars and weekly "
             "sales fall from 1,100 to 900 tickets. Quantity falls by 20 percent and price rises by about 22 "
             "percent, so the elasticity is roughly -0.9, which is inelastic. Revenue therefore rises, from 8,800 "
             "to 9,000 dollars. A common misconception is that a downward-sloping linear demand curve has constant "
             "elasticity. In fact, elasticity varies along the line, being elastic at high prices and inelastic at "
             "low prices. Substitutes, the share of income spent and the time horizon all shape the value."},
]

# Translations of four good texts (the wrong_language variants keep the English request).
TRANSLATIONS: dict[str, tuple[str, str]] = {
    "bees": ("fr", "Les abeilles sont de petits insectes qui volent de fleur en fleur. Dans chaque fleur, il y a un "
                   "jus sucré appelé nectar, et les abeilles le boivent pour avoir de l'énergie. Quand une abeille "
                   "entre dans une fleur, une poussière jaune appelée pollen se colle à son corps poilu. Ensuite, "
                   "l'abeille vole vers la fleur suivante, et un peu de pollen y tombe. Les fleurs ont besoin du "
                   "pollen d'autres fleurs pour faire des graines. Les graines peuvent devenir de nouvelles plantes "
                   "au printemps suivant. Ainsi, quand une abeille cherche à manger, elle aide aussi les fleurs sans "
                   "le savoir. Tu peux observer cela dans un jardin ou un parc par une journée ensoleillée. Regarde "
                   "bien, et tu verras peut-être du pollen jaune sur les pattes d'une abeille. Peux-tu nommer une "
                   "fleur qu'une abeille a visitée ?"),
    "rain": ("fr", "T'es-tu déjà demandé d'où vient la pluie ? Tout commence avec l'eau des mers, des lacs et des "
                   "flaques. Quand le soleil brille, il réchauffe l'eau. Une partie de l'eau se transforme en gouttes "
                   "minuscules, trop petites pour être vues, qui montent dans l'air. Tout en haut dans le ciel, l'air "
                   "est froid. Là, les petites gouttes se rassemblent et forment des nuages. Quand les gouttes d'un "
                   "nuage deviennent grosses et lourdes, elles tombent sous forme de pluie. La pluie remplit à nouveau "
                   "les lacs et la mer, et le voyage recommence. Ce voyage sans fin s'appelle le cycle de l'eau. Tu "
                   "peux en voir une petite partie à la maison quand un verre froid se couvre de gouttes. Où va une "
                   "flaque, selon toi, par une journée ensoleillée ?"),
    "interest": ("de", "Zinseszins ist Zins, der sowohl auf das Anfangskapital als auch auf die bereits angesammelten "
                       "Zinsen berechnet wird. Wird ein Kapital P zu einem jährlichen Zinssatz r n-mal pro Jahr "
                       "verzinst, beträgt sein Wert nach t Jahren P(1 + r/n)^(nt). Zum Beispiel wachsen 1.000 Dollar "
                       "bei 6 Prozent und monatlicher Verzinsung in zehn Jahren auf etwa 1.819 Dollar, während "
                       "einfacher Zins nur 1.600 Dollar ergäbe. Der Abstand wächst mit der Zeit, weil das Wachstum "
                       "exponentiell und nicht linear ist. Strebt n gegen unendlich, geht die Formel in die stetige "
                       "Verzinsung P mal e^(rt) über. Ein verbreiteter Irrtum ist, dass die Häufigkeit der Verzinsung "
                       "ebenso wichtig sei wie der Zinssatz. Tatsächlich hebt der Wechsel von jährlicher zu täglicher "
                       "Verzinsung bei 6 Prozent den effektiven Jahreszins nur von 6,00 auf etwa 6,18 Prozent. "
                       "Zinssatz und Anlagedauer bestimmen das Ergebnis."),
    "photosynthesis": ("de", "Die lichtabhängigen Reaktionen der Photosynthese finden in den Thylakoidmembranen des "
                             "Chloroplasten statt. Das Photosystem II absorbiert Licht und nutzt die Energie, um Wasser "
                             "zu spalten, wobei Sauerstoff, Protonen und Elektronen frei werden. Die Elektronen wandern "
                             "über eine Elektronentransportkette zum Photosystem I, und die freigesetzte Energie pumpt "
                             "Protonen in das Thylakoidlumen. Der entstehende Protonengradient treibt die ATP-Synthase "
                             "an, die durch Chemiosmose ATP erzeugt. Am Photosystem I regt ein zweites Photon die "
                             "Elektronen erneut an, und sie reduzieren schließlich NADP+ zu NADPH. ATP und NADPH "
                             "treiben anschließend den Calvin-Zyklus im Stroma an. Ein häufiger Irrtum ist, dass der "
                             "von Pflanzen abgegebene Sauerstoff aus dem Kohlendioxid stammt. Markierungsexperimente "
                             "mit schwerem Sauerstoff zeigten, dass er aus dem Wasser stammt. Für jedes "
                             "Sauerstoffmolekül werden etwa acht Photonen benötigt."),
}

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s]


def shuffled(text: str, seed: int = SHUFFLE_SEED) -> str:
    """The sentences in another order (fixed seed; never the original order)."""
    parts = sentences(text)
    rng = random.Random(seed)
    order = list(range(len(parts)))
    while order == sorted(order):
        rng.shuffle(order)
    return " ".join(parts[i] for i in order)


def repetitive(text: str, block: int = 3) -> str:
    """The first ``block`` sentences, repeated until the text is as long (in words) as the original."""
    parts, target = sentences(text)[:block], len(text.split())
    out: list[str] = []
    while sum(len(s.split()) for s in out) < target:
        out.append(parts[len(out) % len(parts)])
    return " ".join(out)


def request(env: Any, item: dict[str, str], audience: str | None = None) -> dict[str, Any]:
    """The request of an item (optionally re-targeted to another audience): topic, format, audience, language
    and the "prompt" rendered from the pipeline's format template, as a plan row carries them."""
    audience = audience or item["audience"]
    prompt = env.get_template(f"en/{item['format']}.j2").render(
        extract=item["extract"], seed_kind="outline", topic=item["topic"], subject=item["subject"],
        course=item["course"], unit=item["unit"], audience=audience, style_index=0, language="en").strip()
    return {"topic": item["topic"], "format": item["format"], "audience": audience, "language": "en", "prompt": prompt}


def build_set(env: Any, items: list[dict[str, str]] = ITEMS,
              translations: dict[str, tuple[str, str]] = TRANSLATIONS) -> list[dict[str, Any]]:
    """The planted evaluation set: one row per document (``case``, ``defect`` -- "good" or one of DEFECTS --,
    ``source``: the good item whose text it derives from, ``text``, and the request's columns)."""
    cases: list[dict[str, Any]] = []

    def add(defect: str, source: dict[str, str], text: str, req: dict[str, Any], **extra: Any) -> None:
        cases.append({"case": f"{defect}/{source['id']}", "defect": defect, "source": source["id"], "text": text,
                      **req, **extra})

    for item in items:
        add("good", item, item["text"], request(env, item))
    groups: dict[str, list[dict[str, str]]] = {}
    for item in items:
        groups.setdefault(item["audience"], []).append(item)
    for group in groups.values():  # another item's request, same audience: only the topic is wrong
        for i, item in enumerate(group):
            other = group[(i + 1) % len(group)]
            add("off_topic", item, item["text"], request(env, other), request_of=other["id"])
    for item in items:
        if item["audience"] == "college_students":
            add("wrong_audience", item, item["text"], request(env, item, audience="young_children"))
    for item in items:
        add("shuffled", item, shuffled(item["text"]), request(env, item))
    for item in items:
        if item["id"] in translations:
            lang, text = translations[item["id"]]
            add("wrong_language", item, text, request(env, item), text_language=lang)
    for item in items:
        add("repetitive", item, repetitive(item["text"]), request(env, item))
    return cases


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U / (n_pos * n_neg))."""
    if not positives or not negatives:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


class Recording:
    """Wraps an engine and keeps every reply (text, tokens) so the report can show what the judge said."""

    def __init__(self, engine: Any):
        self.engine, self.replies = engine, []
        self.name = getattr(engine, "name", "engine")

    def generate(self, prompt: str, params: Any, seed: int) -> Any:
        done = self.engine.generate(prompt, params, seed)
        self.replies.append(done.text)
        return done


def judge_cases(engine: Any, cases: list[dict[str, Any]], *, retries: int = 1, env: Any = None,
                progress: bool = False) -> list[dict[str, Any]]:
    """Judge every case as the judge stage does; one record per case (scores, status, reply texts, cost)."""
    from synthcorpus.engines import SamplingParams
    from synthcorpus.judge import judge_one, overall, words
    from synthcorpus.prompts import environment
    from synthcorpus.spec.judge import JudgeSpec

    cfg = JudgeSpec()  # the stage's defaults: request_words, document_words
    env = env or environment(TEMPLATE_DIR)
    template = env.get_template("en/judge.j2")
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=TEMPERATURE, top_p=1.0)
    recording = Recording(engine)
    records = []
    for i, case in enumerate(cases):
        prompt = template.render(document=words(case["text"], cfg.document_words),
                                 request=words(case["prompt"], cfg.request_words), topic=case["topic"],
                                 format=case["format"], audience=case["audience"], language=case["language"]).strip()
        first = len(recording.replies)
        started = time.perf_counter()
        verdict = judge_one(recording, prompt, params, retries=retries, seed=1000 + 10 * i)
        seconds = time.perf_counter() - started
        replies = recording.replies[first:]
        opening = " ".join(case["text"].split()[:6]).lower()
        records.append({"case": case["case"], "defect": case["defect"], "source": case["source"],
                        "n_words": len(case["text"].split()), "scored": verdict.scores is not None,
                        "scores": verdict.scores, "score_overall": overall(verdict.scores),
                        "critique": verdict.critique, "error": verdict.error, "attempts": verdict.attempts,
                        "replies": len(replies), "parsed_replies": int(verdict.scores is not None),
                        "prompt_tokens": verdict.prompt_tokens, "completion_tokens": verdict.completion_tokens,
                        "seconds": round(seconds, 3), "reply_texts": replies,
                        "reply_kinds": [reply_kind(t, opening) for t in replies]})
        if progress:
            r = records[-1]
            print(f"  [{i + 1}/{len(cases)}] {r['case']:<28} {'scored ' + str(r['score_overall']) if r['scored'] else 'unscored'}"
                  f"  {r['completion_tokens']} tok {r['seconds']:.1f} s", file=sys.stderr, flush=True)
    return records


_RUBRIC_LINE = re.compile(r"(?im)^\s*(educational_value|coherence|faithfulness|audience_fit)\s*:\s*\d")


def reply_kind(text: str, opening: str) -> str:
    """What a reply is, roughly: has at least one rubric line with a score / copies the document's first six
    words (the judge rewrote or echoed the document) / anything else."""
    if _RUBRIC_LINE.search(text or ""):
        return "has a rubric score line"
    if opening and opening in (text or "").lower():
        return "echoes the document"
    return "other prose"


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group (good, each defect, all bad): n, AUC vs the goods (unscored = 0), AUC among scored
    documents only, share unscored, share of replies that parse, mean overall score, tokens and seconds."""
    def score(r: dict[str, Any]) -> float:
        return r["score_overall"] if r["scored"] else 0.0

    good = [r for r in records if r["defect"] == "good"]
    groups = [("good", good)] + [(d, [r for r in records if r["defect"] == d]) for d in DEFECTS]
    groups.append(("all bad", [r for r in records if r["defect"] != "good"]))
    rows = []
    for name, rs in groups:
        if not rs:
            continue
        replies = sum(r["replies"] for r in rs)
        scored = [r for r in rs if r["scored"]]
        rows.append({
            "group": name, "n": len(rs),
            "auc": None if name == "good" else auc([score(r) for r in good], [score(r) for r in rs]),
            "auc_scored_only": None if name == "good" else auc([r["score_overall"] for r in good if r["scored"]],
                                                              [r["score_overall"] for r in scored]),
            "unscored_share": round(1 - len(scored) / len(rs), 3),
            "reply_parse_share": round(sum(r["parsed_replies"] for r in rs) / replies, 3) if replies else None,
            "mean_score_overall": _mean([r["score_overall"] for r in scored]),
            "mean_completion_tokens": _mean([r["completion_tokens"] for r in rs]),
            "mean_prompt_tokens": _mean([r["prompt_tokens"] for r in rs]),
            "mean_seconds": _mean([r["seconds"] for r in rs]),
        })
    return rows


def error_kinds(records: list[dict[str, Any]]) -> dict[str, int]:
    """Why unscored documents were unscored (the parser's message up to its quoted part)."""
    return dict(Counter((r["error"] or "").split(", got")[0].split(" got ")[0][:80] for r in records if not r["scored"]))


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, fmt: str = "{:.3f}") -> str:
        return "—" if v is None else fmt.format(v)

    lines = ["| group | n | AUC (unscored = 0) | AUC, scored only | unscored | replies parsed | mean overall (scored) "
             "| completion tok / judgement | s / judgement |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['n']} | {f(r['auc'], '{:.2f}')} | {f(r['auc_scored_only'], '{:.2f}')} "
                     f"| {f(r['unscored_share'], '{:.0%}')} | {f(r['reply_parse_share'], '{:.0%}')} "
                     f"| {f(r['mean_score_overall'], '{:.2f}')} | {f(r['mean_completion_tokens'], '{:.1f}')} "
                     f"| {f(r['mean_seconds'], '{:.2f}')} |")
    return "\n".join(lines)


def load_judge(model: str) -> Any:
    """The llama.cpp engine for ``model`` (the bundled name or a .gguf path); a clean exit when it cannot load."""
    from synthcorpus.engines import EngineError, load_engine

    if model != BUNDLED and not Path(model).is_file():
        raise SystemExit(f"judge_eval: model file not found: {model} (pass --model PATH.gguf or set ${MODEL_ENV}, "
                         f"or leave both unset for the bundled {BUNDLED})")
    try:
        return load_engine({"engine": "llamacpp", "model": model, "n_ctx": N_CTX})
    except EngineError as exc:
        raise SystemExit(f"judge_eval: cannot load the judge model: {exc}") from None


def judge_eval(model: str | None = None, retries: int = 1, out: Path = OUT, progress: bool = True) -> dict[str, Any]:
    from synthcorpus.prompts import environment

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = model or os.environ.get(MODEL_ENV) or BUNDLED
    env = environment(TEMPLATE_DIR)
    cases = build_set(env)
    engine = load_judge(model)
    info = engine.model_info()
    started = time.perf_counter()
    try:
        records = judge_cases(engine, cases, retries=retries, env=env, progress=progress)
    finally:
        engine.close()
    wall = time.perf_counter() - started
    rows = summarize(records)
    report = {"benchmark": "judge_eval", "model": {k: info[k] for k in ("model", "model_file", "model_sha256", "model_bytes")},
              "retries": retries, "max_tokens": MAX_TOKENS, "temperature": TEMPERATURE, "n_ctx": N_CTX,
              "cases": Counter(c["defect"] for c in cases), "wall_s": round(wall, 1), "load_s": round(getattr(engine, "load_s", 0.0), 2),
              "rows": rows, "unscored_reasons": error_kinds(records),
              "reply_kinds": dict(Counter(k for r in records for k in r["reply_kinds"])),
              "retry_repeated_reply": sum(1 for r in records if len(r["reply_texts"]) > 1 and len(set(r["reply_texts"])) == 1),
              "records": records}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    scored = sum(r["scored"] for r in records)
    print(f"judge_eval: {info['model_file']} ({info['model_bytes'] / 1e6:.0f} MB), {len(records)} documents "
          f"({', '.join(f'{k} {v}' for k, v in report['cases'].items())}), retries {retries}, max_tokens {MAX_TOKENS}, "
          f"temperature {TEMPERATURE}: {scored}/{len(records)} scored, {wall:.0f} s")
    print(table(rows))
    print("unscored reasons: " + "; ".join(f"{k} ({v})" for k, v in report["unscored_reasons"].items()) if report["unscored_reasons"] else "unscored: none")
    replies = sum(report["reply_kinds"].values())
    print(f"replies: {replies} ({', '.join(f'{k} {v}' for k, v in sorted(report['reply_kinds'].items()))}); "
          f"re-asked documents whose re-ask repeated the reply word for word: {report['retry_repeated_reply']}")
    print(f"AUC 0.5 = chance, 1.0 = every good document above every bad one. JSON with every reply: {out}")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help=f"a .gguf file (default ${MODEL_ENV}, else the bundled {BUNDLED})")
    ap.add_argument("--retries", type=int, default=1, help="re-asks after a malformed reply (default 1)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"JSON report (default {OUT.relative_to(ROOT)})")
    ap.add_argument("--quiet", action="store_true", help="no per-document progress lines")
    a = ap.parse_args()
    judge_eval(model=a.model, retries=a.retries, out=a.out, progress=not a.quiet)
