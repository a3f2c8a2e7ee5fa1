"""Benchmark of benchmark decontamination at scale: our ``decontaminate`` stage vs datatrove's n-gram
decontamination, side by side on the same data.

decontam_scale: N synthetic documents (default 100 k; the documented full size is 1 M, ``--full``) are
checked against a synthetic MMLU-shaped reference set of 14 042 items (MMLU's test-split size: subject,
question, four choices, answer) by

(a) ``ours``: the real ``decontaminate`` stage (``synthcorpus.stages.decontaminate``, run with its marker
    commit by ``stages.contract.execute`` over the committed ``near_dedup`` shards): it loads the reference
    JSONL (``text_columns: [question, choices]``), builds ``quality.decontam.NgramIndex`` (word 10-grams,
    blake2b 64-bit, sorted numpy arrays), looks every document's 10-grams up, confirms candidates with
    ``difflib`` (matched words / item words > 0.5) and writes kept and removed shards;
(b) ``datatrove``: datatrove 0.10.1's ``NGramsDecontIndexer`` + ``NGramsDecontFilter`` (same n-gram length,
    ``find_query_ngrams=True``), the filter in a ``LocalPipelineExecutor`` (1 task, 1 worker): ``ParquetReader``
    over the same shards -> ``NGramsDecontFilter`` (removed docs to its ``exclusion_writer``) -> ``ParquetWriter``.

**lighteval.** The indexer's ``_requires_dependencies = ["lighteval"]`` makes constructing it raise
ImportError without lighteval, and its ``run`` imports ``lighteval.tasks.registry.Registry`` and calls
``Registry(cache_dir=..., custom_tasks=...).get_task_dict(tasks)`` after hashing the documents it is given as
input, even when no lighteval task is named. No lighteval release co-installs with this project (every one pins
``termcolor==2.3.0``, apache-airflow-core 3.3.2 needs ``termcolor>=3``), and none works with datatrove 0.10.1's
indexer even in a venv of its own (0.11+ dropped ``cache_dir`` / ``get_task_dict``: TypeError; 0.7.0-0.10.0 need
``numpy<2``, datatrove ``numpy>=2``; <= 0.6.2 pin spaCy 3.7.2, whose thinc fails to import under numpy 2). The
indexer can be fed a local set offline through its own input
(documents with ``text`` = gold answer, ``metadata = {query, task}``), so this benchmark does exactly that with
datatrove's unmodified ``NGramsDecontIndexer.run`` (its tokenizer, ``simplify_text``, ``compute_hashes``, and
its ``<task>.index.hashes`` file), reading the reference JSONL with datatrove's ``JsonlReader``, and shims only
the two lighteval touch points: the constructor's dependency check is skipped (``object.__new__``) and the
lighteval modules it imports are stand-ins whose registry holds no task (``get_task_dict([]) -> {}``,
``load_datasets`` a no-op: what a lighteval of that API does for an empty task list). The filter side is
datatrove's own code, unchanged. See benchmarks/README.md.

The data (generated deterministically at benchmark time from include/seeds/, nothing downloaded):

- vocabulary: English function words, then the words of the shipped seed texts, then pronounceable pseudo-words
  (``quality_bench.vocabulary``), 30 k in all, Zipf-like frequencies;
- reference items: MMLU-like stems ("Which of the following best describes ...", "Statement 1 | ...", a
  scenario then a question, ...) filled with vocabulary words, 57 MMLU subject names, 4 choices of 1-12 words;
- documents (~WORDS words, 75-125 %): paragraphs of sentences, SEED_SHARE of them real sentences from
  include/seeds/demo_web_samples.jsonl, the rest vocabulary words; each document from its own RNG
  (seeded by its index), so the generator holds one shard at a time;
- PLANTED (500) documents embed one reference item (distinct items) with small edits, 6 kinds in turn:
  ``reformatted`` (as "Question: ... A. ... Answer: B"), ``case_punct`` (upper / lower case, punctuation
  changed), ``substituted`` (1 word in 10 replaced), ``truncated`` (the first 60-80 % of the item's words),
  ``question_only`` (the question and the gold answer's text, no other choice), ``combined`` (lower case,
  1 word in 15 replaced, last choice dropped);
- FRAGMENTS (500) documents quote FRAGMENT_WORDS (13) consecutive words of an item's question, at most a
  third of that item: a shared 10- and 12-gram but not a copy of the item (datatrove removes such a document
  by design, ours keeps it unless > 50 % of the item's words match);
- every other document is clean: removing one is a false positive.

Each arm runs in its own fresh single-threaded child process (OMP/OPENBLAS/MKL threads = 1) after the
corpus is written by a generator child: docs/s = documents / wall time of the measured part (index build +
the whole pass, both arms; interpreter start and imports excluded), peak = VmHWM (reset with
/proc/self/clear_refs just before) minus VmRSS then. Printed, and written to .artifacts/bench/decontam_scale-<docs>.json.

Run: .venv/bin/python benchmarks/run.py decontam_scale    (100 k docs: ~7 min of CPU, 19 min measured under load)
     .venv/bin/python benchmarks/decontam_scale.py --full  (1 M docs: ~70 min of CPU, datatrove ~55 of them)
     .venv/bin/python benchmarks/decontam_scale.py --quick (10 k docs: ~1.5 min of CPU, 4 min under load)
     .venv/bin/python benchmarks/decontam_scale.py --docs N --items N --planted N --fragments N --words N
         --ngram N --dt-ngram N --only ours,datatrove --out FILE --keep
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_bench import FUNCTION_WORDS, VOCAB_SIZE, _env, _Meter, _patch_datatrove_xxhash, _version, vocabulary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "include" / "seeds"
OUT_DIR = ROOT / ".artifacts" / "bench"  # decontam_scale-<docs>.json
DOCS = 100_000  # default: datatrove's filter does ~310 docs per CPU-second here, so 1 M takes it ~55 min of a core
FULL_DOCS = 1_000_000
QUICK_DOCS = 10_000
ITEMS = 14_042  # MMLU's test split
PLANTED = 500
FRAGMENTS = 500
WORDS = 200  # mean words per document
SHARD_DOCS = 12_500
NGRAM = 10  # ours' default (Cosmopedia's); datatrove's default is 12 (--dt-ngram 12)
THRESHOLD = 0.5
SEED_SHARE = 0.25
FRAGMENT_WORDS = 13
BENCH = "mmlu_synth"
RUN_ID = "bench"
KINDS = ("reformatted", "case_punct", "substituted", "truncated", "question_only", "combined")
SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous moral_disputes "
    "moral_scenarios nutrition philosophy prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy virology world_religions"
).split()
STEMS = (  # {c}: a 2-8 word phrase, {s}: a 8-40 word sentence, {n}: a number
    "Which of the following best describes {c}?",
    "Which of the following is true of {c}?",
    "Which of the following statements about {c} is correct?",
    "What is the primary {c}?",
    "{s} Which of the following is most likely?",
    "{s} What is the {c}?",
    "{s} This is an example of",
    "Statement 1 | {s} Statement 2 | {s}",
    "{s} {s} Which of the following best explains {c}?",
    "Find the {c} of {n} and {n}.",
    "{s} According to the passage, {c} is",
)
_WORD = re.compile(r"[a-z]+")


# ----------------------------------------------------------------------------------------------- data


def _vocab() -> list[str]:
    """Function words, then the seed texts' words (most frequent first), then pseudo-words: VOCAB_SIZE words."""
    counts: dict[str, int] = {}
    for line in (SEEDS / "demo_web_samples.jsonl").read_text().splitlines():
        for w in _WORD.findall(json.loads(line)["text"].lower()):
            counts[w] = counts.get(w, 0) + 1
    words = list(FUNCTION_WORDS)
    seen = set(words)
    for w in sorted(counts, key=lambda w: (-counts[w], w)):
        if w not in seen:
            seen.add(w)
            words.append(w)
    for w in vocabulary(VOCAB_SIZE):
        if len(words) >= VOCAB_SIZE:
            break
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _seed_sentences() -> list[str]:
    out = []
    for line in (SEEDS / "demo_web_samples.jsonl").read_text().splitlines():
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s.split()) >= 4]
    return out


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class Words:
    """Zipf-like draws from the vocabulary (weight 1 / (rank + 10)), for Python and numpy RNGs."""

    def __init__(self) -> None:
        import numpy as np

        self.vocab = _vocab()
        w = 1.0 / (np.arange(len(self.vocab)) + 10.0)
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0
        self._cdf = self.cdf.tolist()

    def draw(self, rng: random.Random, k: int) -> list[str]:
        return [self.vocab[min(bisect.bisect_right(self._cdf, rng.random()), len(self.vocab) - 1)] for _ in range(k)]

    def ids(self, g, k: int):
        import numpy as np

        return np.searchsorted(self.cdf, g.random(k), side="right")


def reference_items(k: int = ITEMS, seed: int = 0, words: Words | None = None) -> list[dict]:
    """k MMLU-shaped items ``{id, subject, question, choices[4], answer}``, deterministic."""
    words = words or Words()
    rng = random.Random(seed)

    def phrase() -> str:
        return " ".join(words.draw(rng, rng.randint(2, 8)))

    def sentence() -> str:
        ws = words.draw(rng, min(40, max(8, int(rng.lognormvariate(2.8, 0.5)))))
        if rng.random() < 0.2:
            ws[rng.randrange(len(ws))] = str(rng.randint(2, 1999))
        return _cap(" ".join(ws)) + "."

    def number() -> str:
        return str(rng.randint(2, 500)) if rng.random() < 0.7 else f"{rng.randint(1, 99)}.{rng.randint(1, 9)}"

    items = []
    for j in range(k):
        stem = rng.choice(STEMS)
        question = re.sub(r"\{(\w)\}", lambda m: {"c": phrase, "s": sentence, "n": number}[m.group(1)](), stem)
        if rng.random() < 0.15:
            choices = [number() for _ in range(4)]
        else:
            n = rng.randint(1, 9)
            choices = [" ".join(words.draw(rng, max(1, min(12, n + rng.randint(-1, 3))))) for _ in range(4)]
        items.append({"id": f"{BENCH}-{j:05d}", "subject": rng.choice(SUBJECTS), "question": _cap(question),
                      "choices": choices, "answer": rng.randrange(4)})
    return items


def item_words(item: dict) -> list[str]:
    """The item as our index sees it (question + choices, normalized words)."""
    from synthcorpus.text import normalize

    return normalize(item["question"] + " " + " ".join(item["choices"])).split()


class Corpus:
    """n documents, each a pure function of (seed, index) and of the items it embeds.

    ``planted`` = {doc index: (item index, kind)}, ``fragments`` = {doc index: item index}."""

    def __init__(self, n: int, items: list[dict], planted: int = PLANTED, fragments: int = FRAGMENTS,
                 seed: int = 0, words: int = WORDS, vocab: Words | None = None):
        self.n, self.items, self.seed, self.words = n, items, seed, words
        self.w = vocab or Words()
        self.sentences = _seed_sentences()
        rng = random.Random(seed + 1)
        planted, fragments = min(planted, n // 4, len(items)), min(fragments, n // 4)
        where = rng.sample(range(n), planted + fragments)
        chosen = rng.sample(range(len(items)), planted)
        taken = set(chosen)
        eligible = [j for j, it in enumerate(items) if j not in taken
                    and len(it["question"].split()) >= FRAGMENT_WORDS + 2 and len(item_words(it)) >= 3 * FRAGMENT_WORDS]
        frag_items = rng.sample(eligible, min(fragments, len(eligible)))
        self.planted = {d: (j, KINDS[k % len(KINDS)]) for k, (d, j) in enumerate(zip(where[:planted], chosen))}
        self.fragments = dict(zip(where[planted:], frag_items))

    def _background(self, i: int) -> list[str]:
        import numpy as np

        g = np.random.Generator(np.random.PCG64([self.seed, i]))
        target = int(g.integers(self.words * 3 // 4, self.words * 5 // 4 + 1))
        ids = self.w.ids(g, target).tolist()
        u = g.random(target // 8 + 2).tolist()
        picks = g.integers(0, len(self.sentences), len(u)).tolist()
        lens = g.integers(8, 25, len(u)).tolist()
        v, out, pos, k = self.w.vocab, [], 0, 0
        while pos < target:
            if u[k] < SEED_SHARE:
                s = self.sentences[picks[k]]
                pos += s.count(" ") + 1
            else:
                s = _cap(" ".join(v[j] for j in ids[pos : pos + lens[k]])) + "."
                pos += lens[k]
            out.append(s)
            k += 1
        return out

    def _near_copy(self, i: int, item: dict, kind: str) -> str:
        rng = random.Random(self.seed * 1_000_003 + i)
        q, ch, ans = item["question"], item["choices"], item["answer"]
        letters = "ABCD"
        lettered = " ".join(f"{letters[j]}) {c}" for j, c in enumerate(ch))

        def substitute(tokens: list[str], every: int) -> list[str]:
            tokens = list(tokens)
            for j in rng.sample(range(len(tokens)), max(1, round(len(tokens) / every))):
                tokens[j] = self.w.draw(rng, 1)[0]
            return tokens

        if kind == "reformatted":
            return f"Question: {q}\n" + "\n".join(f"{letters[j]}. {c}" for j, c in enumerate(ch)) + f"\nAnswer: {letters[ans]}"
        if kind == "case_punct":
            text = (q.replace("?", " ...").replace(".", "!") + " " + "; ".join(f"({letters[j].lower()}) {c}," for j, c in enumerate(ch)))
            return text.upper() if i % 2 else text.lower()
        if kind == "substituted":
            return " ".join(substitute(f"{q} {lettered}".split(), 10))
        if kind == "truncated":
            tokens = f"{q} {lettered}".split()
            return " ".join(tokens[: max(1, round(len(tokens) * rng.uniform(0.6, 0.8)))])
        if kind == "question_only":
            return f"{q} The answer is {ch[ans]}."
        if kind == "combined":
            return " ".join(substitute(f"{q} {' '.join(f'{letters[j]}) {c}' for j, c in enumerate(ch[:3]))}".lower().split(), 15))
        raise ValueError(kind)

    def text(self, i: int) -> str:
        sents = self._background(i)
        insert = None
        if i in self.planted:
            j, kind = self.planted[i]
            insert = self._near_copy(i, self.items[j], kind)
        elif i in self.fragments:
            qw = self.items[self.fragments[i]]["question"].split()
            start = random.Random(self.seed * 7 + i).randrange(len(qw) - FRAGMENT_WORDS + 1)
            insert = "As one quiz put it, " + " ".join(qw[start : start + FRAGMENT_WORDS]).rstrip("?.") + "."
        if insert is not None:
            sents.insert(len(sents) // 2, insert)
        paras = [" ".join(sents[k : k + 5]) for k in range(0, len(sents), 5)]
        return "\n\n".join(paras)


def prompt_id(i: int) -> str:
    return f"doc-{i:07d}"


def doc_index(pid: str) -> int:
    return int(pid.rsplit("-", 1)[1])


# ------------------------------------------------------------------------------------------ scoring


def score(removed: set[int], planted: dict[int, tuple[int, str]], fragments: dict[int, int]) -> dict:
    """Catches on the planted near-copies (overall and per kind), fragment docs removed, false positives."""
    per_kind = {k: {"planted": 0, "caught": 0} for k in KINDS}
    for d, (_, kind) in planted.items():
        per_kind[kind]["planted"] += 1
        per_kind[kind]["caught"] += d in removed
    caught = sum(1 for d in planted if d in removed)
    return {"planted": len(planted), "caught": caught, "recall": caught / max(len(planted), 1),
            "per_kind": per_kind, "fragments": len(fragments), "fragments_removed": sum(1 for d in fragments if d in removed),
            "removed": len(removed), "false_positives": sum(1 for d in removed if d not in planted and d not in fragments)}


def _cpu() -> float:
    """CPU seconds (user + system) of this process so far: less sensitive than wall time to other load."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _truth(tmp: str) -> tuple[dict[int, tuple[int, str]], dict[int, int]]:
    t = json.loads(Path(tmp, "truth.json").read_text())
    return ({int(d): (j, k) for d, (j, k) in t["planted"].items()}, {int(d): j for d, j in t["fragments"].items()})


# ------------------------------------------------------------------------------------- child processes


def _spec(cfg: dict):
    from synthcorpus.spec import parse_spec
    from tests.conftest import tiny_spec_dict

    decontam = {"references": [{"name": BENCH, "path": cfg["refs"], "text_columns": ["question", "choices"], "id_column": "id"}],
                "ngram": cfg["ngram"], "threshold": cfg["threshold"]}
    return parse_spec(tiny_spec_dict(**{"documents": cfg["docs"], "quality.decontamination": decontam}))


def _run(cfg: dict):
    from synthcorpus.stages.contract import RunContext

    return RunContext.create(_spec(cfg), RUN_ID)


def _child_generate(tmp: str, cfg: dict) -> dict:
    import pyarrow as pa

    from synthcorpus import storage
    from tests.stagekit import given_documents

    t0 = time.perf_counter()
    w = Words()
    items = reference_items(cfg["items"], words=w)
    with open(cfg["refs"], "w") as fh:
        for it in items:
            fh.write(json.dumps(it) + "\n")
    corpus = Corpus(cfg["docs"], items, cfg["planted"], cfg["fragments"], words=cfg["words"], vocab=w)
    run = _run(cfg)
    uris, n_words = [], 0
    for k, start in enumerate(range(0, corpus.n, SHARD_DOCS)):
        idx = range(start, min(corpus.n, start + SHARD_DOCS))
        texts = [corpus.text(i) for i in idx]
        n_words += sum(t.count(" ") + t.count("\n\n") + 1 for t in texts)
        uri = run.layout.shard("near_dedup", k)
        storage.write_parquet(uri, pa.table({"prompt_id": [prompt_id(i) for i in idx], "text": texts}))
        uris.append(uri)
    given_documents(run, "near_dedup", uris)  # committed, as near_dedup would: what decontaminate reads
    Path(tmp, "truth.json").write_text(json.dumps({"planted": corpus.planted, "fragments": corpus.fragments}))
    iw = [len(item_words(it)) for it in items]
    from minhash_bench import _rss_mb

    return {"seconds": time.perf_counter() - t0, "shards": len(uris), "docs": corpus.n, "words_per_doc": n_words / corpus.n,
            "items": len(items), "item_words_mean": sum(iw) / len(iw), "item_words_min": min(iw), "item_words_max": max(iw),
            "planted": len(corpus.planted), "fragments": len(corpus.fragments), "peak_rss_mb": _rss_mb("VmHWM"),
            "shard_dir": run.layout.stage_dir("near_dedup").removeprefix("file://")}


def _child_ours(tmp: str, cfg: dict) -> dict:
    # imports the stage does lazily, done here so they are outside the measured part
    import difflib  # noqa: F401

    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.dataset  # noqa: F401  (pyarrow.parquet.read_table imports it, and pandas, on first use)
    import pyarrow.parquet as pq

    from synthcorpus import storage
    from synthcorpus.stages.contract import execute
    from synthcorpus.stages.decontaminate import reference_index

    run = _run(cfg)
    with _Meter() as m:
        c0 = _cpu()
        marker = execute(run, "decontaminate")
        cpu_s = _cpu() - c0
    stats = marker["stats"]
    removed: dict[int, list[str]] = {}
    for i in range(len(marker["outputs"]["documents"])):
        uri = run.layout.removed("decontaminate", i)
        if storage.exists(uri):
            for row in pq.read_table(uri.removeprefix("file://"), columns=["prompt_id", "decontam_hits"]).to_pylist():
                removed[doc_index(row["prompt_id"])] = [h["item_id"] for h in row["decontam_hits"]]
    t0 = time.perf_counter()
    _, index = reference_index(run)  # timed again on its own (it is part of the measured stage run above)
    index_s = time.perf_counter() - t0
    planted, fragments = _truth(tmp)
    right = sum(1 for d, (j, _) in planted.items() if f"{BENCH}-{j:05d}" in removed.get(d, []))
    return {"seconds": m.seconds, "docs_per_s": cfg["docs"] / m.seconds, "peak_mb": m.peak_mb, "index_s": index_s,
            "cpu_s": cpu_s, "docs_per_cpu_s": cfg["docs"] / cpu_s, "index_items": len(index), "index_pairs": int(len(index._keys)), "index_mb": index.nbytes / 2**20,
            "skipped_short": index.skipped_short, "kept": stats["kept"], "right_item": right,
            **score(set(removed), planted, fragments)}


def _lighteval_stand_in() -> None:
    """Stand-ins for the two lighteval modules ``NGramsDecontIndexer.run`` imports, with a registry that holds
    no task: ``Registry(cache_dir=..., custom_tasks=...).get_task_dict(tasks)`` -> {} and
    ``LightevalTask.load_datasets(tasks)`` a no-op. Only used with ``lighteval_tasks=[]``: the reference items
    come in as the step's input documents."""
    if "lighteval" in sys.modules or _importable("lighteval"):
        return

    class Registry:
        def __init__(self, cache_dir=None, custom_tasks=None):
            if custom_tasks:
                raise RuntimeError("lighteval stand-in: custom tasks need the real lighteval")

        def get_task_dict(self, tasks):
            if tasks:
                raise RuntimeError(f"lighteval stand-in: no lighteval task can be loaded here, got {tasks!r}")
            return {}

    class LightevalTask:
        @staticmethod
        def load_datasets(tasks, *a, **k):
            assert not list(tasks)

    mods = {name: types.ModuleType(name) for name in
            ("lighteval", "lighteval.tasks", "lighteval.tasks.registry", "lighteval.tasks.lighteval_task")}
    mods["lighteval.tasks.registry"].Registry = Registry
    mods["lighteval.tasks.lighteval_task"].LightevalTask = LightevalTask
    sys.modules.update(mods)


def _importable(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def _dt_reference_adapter(self, data: dict, path: str, id_in_file) -> dict:
    """A reference item as NGramsDecontIndexer's input expects it: text = the gold answer, metadata.query =
    the prompt (here question + choices, the same text our index gets), metadata.task = the benchmark."""
    return {"text": data["choices"][data["answer"]], "id": data["id"],
            "metadata": {"query": data["question"] + " " + " ".join(data["choices"]), "task": BENCH}}


def _child_datatrove(tmp: str, cfg: dict) -> dict:
    if not _importable("datatrove"):
        return {"skipped": "datatrove is not importable in this venv"}
    import numpy as np
    import pyarrow.dataset  # noqa: F401  (imports done outside the measured part, as for ours)
    import pyarrow.parquet as pq
    import spacy  # noqa: F401  (its word tokenizer imports spaCy on first use)
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    _patch_datatrove_xxhash()  # datatrove 0.10.1's default xxhash call breaks on xxhash >= 4 (see quality_bench)
    real_lighteval = _importable("lighteval")
    _lighteval_stand_in()
    d = os.path.join(tmp, "datatrove")
    config = NGramsDecontConfig(n_grams=cfg["dt_ngram"], find_query_ngrams=True)
    shard_dir = json.loads(Path(tmp, "generate.json").read_text())["shard_dir"]
    filt = [
        ParquetReader(shard_dir, glob_pattern="shard-*.parquet", text_key="text", id_key="prompt_id"),
        NGramsDecontFilter(f"{d}/index", config=config, exclusion_writer=ParquetWriter(f"{d}/removed")),
        ParquetWriter(f"{d}/out"),
    ]
    with _Meter() as m:
        t0, c0 = time.perf_counter(), _cpu()
        # Constructed without PipelineStep.__new__'s dependency check (it requires lighteval); unchanged otherwise.
        indexer = object.__new__(NGramsDecontIndexer)
        indexer.__init__(f"{d}/index", lighteval_tasks=[], config=config)
        refs = JsonlReader(os.path.dirname(cfg["refs"]), glob_pattern=os.path.basename(cfg["refs"]),
                           adapter=_dt_reference_adapter)
        indexer.run(refs.run())
        index_s = time.perf_counter() - t0
        LocalPipelineExecutor(pipeline=filt, tasks=1, workers=1, logging_dir=f"{d}/logs").run()
        cpu_s = _cpu() - c0
    index_files = sorted(Path(d, "index").glob("*.index.hashes"))
    hashes = sum(int(np.fromfile(f, dtype=config.hash_config.np_descr).size) for f in index_files)
    removed = set()
    for f in sorted(Path(d, "removed").glob("*.parquet")):
        removed.update(doc_index(x) for x in pq.read_table(f, columns=["id"]).column("id").to_pylist())
    kept = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(d, "out").glob("*.parquet"))
    planted, fragments = _truth(tmp)
    return {"version": _version("datatrove"), "lighteval": "real" if real_lighteval else "stand-in (no task)",
            "seconds": m.seconds, "docs_per_s": cfg["docs"] / m.seconds, "peak_mb": m.peak_mb, "index_s": index_s,
            "cpu_s": cpu_s, "docs_per_cpu_s": cfg["docs"] / cpu_s, "filter_s": m.seconds - index_s, "index_hashes": hashes, "index_mb": sum(f.stat().st_size for f in index_files) / 2**20,
            "index_files": [f.name for f in index_files], "kept": kept, **score(removed, planted, fragments)}


def _child_main(kind: str, tmp: str, cfg: dict) -> None:
    os.environ["SYNTHCORPUS_STORAGE_URI"] = Path(tmp, "storage").as_uri()
    result = globals()[f"_child_{kind}"](tmp, cfg)
    if kind == "generate":
        Path(tmp, "generate.json").write_text(json.dumps(result))
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(kind: str, tmp: str, cfg: dict) -> dict | None:
    log = Path(tmp, f"{kind}.log")
    code = f"import decontam_scale as b, json; b._child_main({kind!r}, {tmp!r}, json.loads({json.dumps(cfg)!r}))"
    with log.open("w") as err:
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err, text=True,
                              env=_env(), cwd=ROOT, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(f"  {kind}: failed (exit {proc.returncode})\n{log.read_text()[-3000:]}", flush=True)
        return None
    return json.loads(lines[-1].removeprefix("RESULT "))


# ------------------------------------------------------------------------------------------ reporting


def _line(name: str, r: dict) -> str:
    return (f"{r['docs_per_s']:.0f} docs/s ({r['seconds']:.1f} s, of it index build {r['index_s']:.1f} s; "
            f"{r['docs_per_cpu_s']:.0f} docs per CPU-second), peak "
            f"+{r['peak_mb']:.0f} MB; caught {r['caught']}/{r['planted']} planted near-copies "
            f"(recall {r['recall']:.3f}), fragment docs removed {r['fragments_removed']}/{r['fragments']}, "
            f"false positives {r['false_positives']} (removed {r['removed']} in all)")


def _report(kind: str, res: dict, cfg: dict) -> None:
    """The line of the arm that just finished; after the second, the comparison."""
    o, t = res.get("ours"), res.get("datatrove")
    if kind == "ours" and o:
        print(f"  ours (decontaminate stage, {cfg['ngram']}-gram index + difflib > {cfg['threshold']}): {_line('ours', o)}; "
              f"right item in hits {o['right_item']}/{o['caught']}; index {o['index_pairs']} (n-gram, item) pairs, "
              f"{o['index_mb']:.1f} MB", flush=True)
    if kind == "datatrove" and t and "skipped" in t:
        print(f"  datatrove: {t['skipped']} -> comparison skipped", flush=True)
    elif kind == "datatrove" and t:
        print(f"  datatrove {t['version']} (NGramsDecontIndexer, lighteval {t['lighteval']}, + NGramsDecontFilter, "
              f"{cfg['dt_ngram']}-gram, find_query_ngrams, 1 worker): {_line('datatrove', t)}; index {t['index_hashes']} "
              f"hashes, {t['index_mb']:.1f} MB on disk", flush=True)
    if kind in ("ours", "datatrove") and o and t and "skipped" not in t:
        kinds = ", ".join(f"{k} {o['per_kind'][k]['caught']}/{t['per_kind'][k]['caught']} of {o['per_kind'][k]['planted']}"
                          for k in KINDS)
        print(f"  caught per kind (ours/datatrove): {kinds}", flush=True)
        print(f"  ratio ours/datatrove: docs/s x{o['docs_per_s'] / t['docs_per_s']:.1f}, "
              f"docs per CPU-second x{o['docs_per_cpu_s'] / t['docs_per_cpu_s']:.1f} "
              f"(pass without index build x{(cfg['docs'] / (o['seconds'] - o['index_s'])) / (cfg['docs'] / t['filter_s']):.1f}); "
              f"peak memory {o['peak_mb']:.0f} vs {t['peak_mb']:.0f} MB (x{o['peak_mb'] / max(t['peak_mb'], 1e-9):.2f}); "
              f"recall {o['recall']:.3f} vs {t['recall']:.3f}; false positives {o['false_positives']} vs {t['false_positives']}",
              flush=True)


def _host() -> dict:
    """When and on what the figures were measured: load average (2 cores shared here), the measured code's md5."""
    import hashlib

    code = {p: hashlib.md5((ROOT / "src" / "synthcorpus" / p).read_bytes()).hexdigest()
            for p in ("quality/decontam.py", "stages/decontaminate.py")}
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "loadavg_start": list(os.getloadavg()), "md5": code}


def decontam_scale(docs: int = DOCS, items: int = ITEMS, planted: int = PLANTED, fragments: int = FRAGMENTS,
                   words: int = WORDS, ngram: int = NGRAM, dt_ngram: int | None = None,
                   order: tuple[str, ...] = ("ours", "datatrove"), out: Path | str | None = "auto", keep: bool = False,
                   quiet: bool = False) -> dict:
    """Generate the data, run each arm in its own fresh process; print and return the figures, and write them as
    JSON to ``out`` (``"auto"``: .artifacts/bench/decontam_scale-<docs>.json; None: not written)."""
    tmp = tempfile.mkdtemp(prefix=f"decontam-bench-{docs}-")
    cfg = {"docs": docs, "items": items, "planted": planted, "fragments": fragments, "words": words, "ngram": ngram,
           "dt_ngram": dt_ngram or ngram, "threshold": THRESHOLD, "refs": os.path.join(tmp, "refs.jsonl")}
    res: dict = {"config": {k: v for k, v in cfg.items() if k != "refs"}, "host": _host()}
    started = time.perf_counter()
    if not quiet:
        print(f"decontam_scale: {docs} docs, {items} MMLU-shaped items; work dir {tmp} (child logs there)", flush=True)
    try:
        gen = _spawn("generate", tmp, cfg)
        if gen is None:
            return res
        res["corpus"] = gen
        if not quiet:
            print(f"  data: {gen['docs']} docs x {gen['words_per_doc']:.0f} words in {gen['shards']} Parquet shards of "
                  f"{SHARD_DOCS}; {gen['items']} items of {gen['item_words_mean']:.0f} words ({gen['item_words_min']}-"
                  f"{gen['item_words_max']}); {gen['planted']} planted near-copies ({len(KINDS)} kinds), {gen['fragments']} "
                  f"fragment docs ({FRAGMENT_WORDS} words of an item), the rest clean (generated in {gen['seconds']:.0f} s, "
                  f"peak RSS {gen['peak_rss_mb']:.0f} MB)", flush=True)
        for kind in order:
            res[kind] = _spawn(kind, tmp, cfg)
            if not quiet:
                _report(kind, res, cfg)
    finally:
        res["wall_s"] = time.perf_counter() - started
        res["host"]["loadavg_end"] = list(os.getloadavg())
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if out:
        out = OUT_DIR / f"decontam_scale-{docs}.json" if out == "auto" else Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1))
        if not quiet:
            print(f"  wall time {res['wall_s']:.0f} s; figures written to {out}", flush=True)
    return res


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--docs", type=int, default=DOCS)
    size.add_argument("--full", action="store_const", const=FULL_DOCS, dest="docs", help=f"{FULL_DOCS} docs")
    size.add_argument("--quick", action="store_const", const=QUICK_DOCS, dest="docs", help=f"{QUICK_DOCS} docs")
    ap.add_argument("--items", type=int, default=ITEMS)
    ap.add_argument("--planted", type=int, default=PLANTED)
    ap.add_argument("--fragments", type=int, default=FRAGMENTS)
    ap.add_argument("--words", type=int, default=WORDS, help="mean words per document")
    ap.add_argument("--ngram", type=int, default=NGRAM, help="n-gram length, both tools")
    ap.add_argument("--dt-ngram", type=int, default=None, help="datatrove's n-gram length (default: --ngram)")
    ap.add_argument("--only", default="ours,datatrove", help="comma-separated, in this order")
    ap.add_argument("--out", default="auto", help="JSON file (default .artifacts/bench/decontam_scale-<docs>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args()
    decontam_scale(a.docs, a.items, a.planted, a.fragments, a.words, a.ngram, a.dt_ngram, tuple(a.only.split(",")),
                   a.out or None, a.keep)
