from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthcorpus import storage
from synthcorpus.seeds import SEED_COLUMNS, SeedError, read_outline, read_samples, read_source, seed_id
from synthcorpus.spec import SampleSource, load_spec
from synthcorpus.stages.contract import RunContext, execute
from tests.conftest import INCLUDE, tiny_spec_dict, write_spec

FIELD = "seeds.web_samples"


# ------------------------------------------------------------------------------------------- outline


def test_demo_outline_reads_into_units():
    rows = read_outline(INCLUDE / "seeds" / "demo_outline.yaml")
    assert len(rows) >= 9
    assert len({r["subject"] for r in rows}) >= 3
    assert len({r["seed_id"] for r in rows}) == len(rows)


@pytest.mark.parametrize(
    "text,message",
    [
        ("subjects: []\n", "subjects: expected a non-empty list"),
        ("- just a list\n", "subjects: expected a non-empty list"),
        ("subjects:\n  - subject: Bio\n    course: Eco\n", r"subjects\[0\].units: expected a non-empty list"),
        ("subjects:\n  - subject: Bio\n    course: Eco\n    units:\n      - title: ''\n        description: d\n",
         r"subjects\[0\].units\[0\].title: expected a non-empty string"),
        ("subjects:\n  - subject: Bio\n    units: [{title: a, description: b}]\n", r"subjects\[0\].course: expected a non-empty string"),
        ("subjects: [\n", "expected valid YAML"),
    ],
)
def test_malformed_outline_names_file_and_field(tmp_path, text, message):
    path = tmp_path / "outline.yaml"
    path.write_text(text)
    with pytest.raises(SeedError, match=message) as info:
        read_outline(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------- helpers


def paragraphs(n: int, prefix: str = "Paragraph") -> list[str]:
    return [f"{prefix} number {i} talks about soil, seeds and sunshine." for i in range(n)]


def source(path: Path | str, **kw) -> tuple[SampleSource, str]:
    """A SampleSource and the URI the seeds stage would pass (CorpusSpec.resolve_uri gives file:// URIs)."""
    return SampleSource(path=str(path), **kw), Path(path).as_uri()


def write_jsonl(path: Path, objs: list) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def write_hf(path: Path, columns: dict) -> Path:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return path


# ------------------------------------------------------------------------------------------- readers


def test_reads_parquet_file_text_column_only(tmp_path):
    texts = paragraphs(30)
    path = write_parquet(tmp_path / "web.parquet", {"id": list(range(30)), "text": texts, "score": [0.5] * 30})
    assert read_samples(*source(path), FIELD) == texts


def test_reads_jsonl_file(tmp_path):
    texts = paragraphs(12)
    path = write_jsonl(tmp_path / "web.jsonl", [{"body": t, "url": f"https://x/{i}"} for i, t in enumerate(texts)])
    # blank lines are allowed
    path.write_text(path.read_text() + "\n\n", encoding="utf-8")
    assert read_samples(*source(path, text_column="body"), FIELD) == texts


def test_reads_hf_save_to_disk_directory(tmp_path):
    texts = paragraphs(25)
    path = write_hf(tmp_path / "hf_ds", {"text": texts, "n": list(range(25))})
    read = read_source(*source(path), FIELD)
    assert read.format == "hf"
    assert read.texts == texts
    # format: hf given explicitly works too
    assert read_samples(*source(path, format="hf"), FIELD) == texts


def test_reads_directory_of_parquet_files(tmp_path):
    a, b = paragraphs(10, "Alpha"), paragraphs(7, "Beta")
    write_parquet(tmp_path / "dir" / "part-000.parquet", {"text": a})
    write_parquet(tmp_path / "dir" / "sub" / "part-001.parquet", {"text": pa.array(b, pa.large_string())})
    (tmp_path / "dir" / "README.md").write_text("not data")
    read = read_source(*source(tmp_path / "dir"), FIELD)
    assert read.texts == a + b
    assert read.format == "parquet_dir" and read.files == 2
    assert re.fullmatch(r"[0-9a-f]{64}", read.sha256)


def test_explicit_format_overrides_extension(tmp_path):
    texts = paragraphs(5)
    path = write_jsonl(tmp_path / "web.txt", [{"text": t} for t in texts])
    assert read_samples(*source(path, format="jsonl"), FIELD) == texts


def test_paths_with_spaces_work_through_file_uris(tmp_path):
    texts = paragraphs(5)
    (tmp_path / "my seeds").mkdir()
    path = write_jsonl(tmp_path / "my seeds" / "web samples.jsonl", [{"text": t} for t in texts])
    src, uri = source(path)
    assert "%20" in uri
    assert read_samples(src, uri, FIELD) == texts


def test_dictionary_encoded_string_column_is_accepted(tmp_path):
    texts = paragraphs(6)
    path = write_parquet(tmp_path / "d.parquet", {"text": pa.array(texts).dictionary_encode()})
    assert read_samples(*source(path), FIELD) == texts


# ------------------------------------------------------------------------------------------- errors


def _corrupt_parquet(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 this is not really parquet at all")
    return p, {}


def _parquet_missing_column(tmp_path):
    return write_parquet(tmp_path / "w.parquet", {"id": [1, 2], "body": ["a" * 30, "b" * 30]}), {}


def _parquet_int_column(tmp_path):
    return write_parquet(tmp_path / "w.parquet", {"text": [1, 2, 3]}), {}


def _jsonl_bad_json(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_text('{"text": "a fine first paragraph here"}\n\n{"text": "broken\n', encoding="utf-8")
    return p, {}


def _jsonl_missing_key(tmp_path):
    return write_jsonl(tmp_path / "w.jsonl", [{"text": "x" * 30}, {"body": "y" * 30, "url": "u"}]), {}


def _jsonl_not_object(tmp_path):
    return write_jsonl(tmp_path / "w.jsonl", [[1, 2, 3]]), {}


def _jsonl_non_string(tmp_path):
    return write_jsonl(tmp_path / "w.jsonl", [{"text": "x" * 30}, {"text": 12345}]), {}


def _jsonl_not_utf8(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_bytes(b'{"text": "caf\xe9 au lait in the morning sun"}\n')
    return p, {}


def _all_too_short(tmp_path):
    return write_jsonl(tmp_path / "w.jsonl", [{"text": "tiny"}, {"text": "  also   tiny "}, {"text": None}]), {}


def _empty_jsonl(tmp_path):
    p = tmp_path / "w.jsonl"
    p.write_text("\n", encoding="utf-8")
    return p, {}


def _missing_file(tmp_path):
    return tmp_path / "nope.parquet", {}


def _unknown_extension(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("text\nhello\n")
    return p, {}


def _hf_format_on_file(tmp_path):
    return write_jsonl(tmp_path / "w.jsonl", [{"text": "x" * 30}]), {"format": "hf"}


def _jsonl_format_on_dir(tmp_path):
    write_parquet(tmp_path / "d" / "a.parquet", {"text": ["x" * 30]})
    return tmp_path / "d", {"format": "jsonl"}


def _empty_dir(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hello")
    return tmp_path / "d", {}


def _parquet_dir_one_bad_file(tmp_path):
    write_parquet(tmp_path / "d" / "a.parquet", {"text": ["x" * 30]})
    write_parquet(tmp_path / "d" / "b.parquet", {"content": ["y" * 30]})
    return tmp_path / "d" / "b.parquet", {"_dir": tmp_path / "d"}


def _hf_missing_column(tmp_path):
    write_hf(tmp_path / "hf", {"content": ["x" * 30]})
    return tmp_path / "hf" / "data-00000-of-00001.arrow", {"_dir": tmp_path / "hf"}


def _hf_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["x" * 30]})}).save_to_disk(str(tmp_path / "dd"))
    return tmp_path / "dd", {}


@pytest.mark.parametrize(
    "make,field,expected",
    [
        (_missing_file, "path", "expected an existing file or directory"),
        (_corrupt_parquet, "path", "expected a readable Parquet file"),
        (_parquet_missing_column, "text_column", r"expected a column 'text', columns present: \['id', 'body'\]"),
        (_parquet_int_column, "text_column", "expected column 'text' to hold strings, got int64"),
        (_jsonl_bad_json, "path", "line 3: expected one JSON object per line"),
        (_jsonl_missing_key, "text_column", r"line 2: expected a key 'text', keys present: \['body', 'url'\]"),
        (_jsonl_not_object, "path", "line 1: expected a JSON object, got list"),
        (_jsonl_non_string, "text_column", "line 2: expected 'text' to be a string, got int 12345"),
        (_jsonl_not_utf8, "path", "expected UTF-8 text"),
        (_all_too_short, "min_chars", r"expected at least one usable text \(>= 20 characters.*3 rows read, 3 too short"),
        (_empty_jsonl, "min_chars", "expected at least one usable text.*0 rows read"),
        (_unknown_extension, "format", "cannot tell the format from the name; expected a file ending in .parquet"),
        (_hf_format_on_file, "format", "expected a directory for format 'hf'"),
        (_jsonl_format_on_dir, "format", "expected a JSONL file for format 'jsonl', got a directory"),
        (_empty_dir, "path", "expected a directory of Parquet files"),
        (_parquet_dir_one_bad_file, "text_column", r"expected a column 'text', columns present: \['content'\]"),
        (_hf_missing_column, "text_column", r"expected a column 'text', columns present: \['content'\]"),
        (_hf_dataset_dict, "path", r"expected one split of a DatasetDict.*dd/train"),
    ],
)
def test_bad_inputs_give_one_clear_error(tmp_path, make, field, expected):
    named, opts = make(tmp_path)
    where = opts.pop("_dir", named)
    with pytest.raises(SeedError) as info:
        read_samples(*source(where, **opts), FIELD)
    message = str(info.value)
    assert message.startswith(f"{named}: {FIELD}.{field}: "), message
    assert re.search(expected, message), message


def test_unknown_format_value_is_reported(tmp_path):
    path = write_jsonl(tmp_path / "w.jsonl", [{"text": "x" * 30}])
    bad = SampleSource.model_construct(path=str(path), format="csv", text_column="text", sample_size=None, seed=0, min_chars=20)
    with pytest.raises(SeedError, match=rf"^{re.escape(str(path))}: seeds.instructions.format: expected one of auto, parquet"):
        read_samples(bad, path.as_uri(), "seeds.instructions")


# ------------------------------------------------------------------------------------------- sampling


@pytest.fixture
def big_parquet(tmp_path) -> Path:
    return write_parquet(tmp_path / "big.parquet", {"text": paragraphs(500), "n": list(range(500))})


def test_sampling_is_deterministic_per_seed(big_parquet):
    a = read_samples(*source(big_parquet, sample_size=25, seed=1), FIELD)
    b = read_samples(*source(big_parquet, sample_size=25, seed=1), FIELD)
    c = read_samples(*source(big_parquet, sample_size=25, seed=2), FIELD)
    assert a == b
    assert len(a) == len(c) == 25
    assert set(a) != set(c)
    assert set(a) <= set(paragraphs(500))
    # kept rows come back in source order
    order = {t: i for i, t in enumerate(paragraphs(500))}
    assert [order[t] for t in a] == sorted(order[t] for t in a)


def test_sampling_visits_only_what_it_needs(big_parquet):
    read = read_source(*source(big_parquet, sample_size=10, seed=3), FIELD)
    assert read.rows_read == 500 and read.examined == 10 and len(read.texts) == 10


def test_sample_size_larger_than_data_returns_everything_usable(tmp_path):
    texts = paragraphs(40)
    path = write_jsonl(tmp_path / "w.jsonl", [{"text": t} for t in texts + ["short"]])
    read = read_source(*source(path, sample_size=1000, seed=5), FIELD)
    assert read.texts == texts
    assert (read.rows_read, read.examined, read.too_short, read.stats()["kept"]) == (41, 41, 1, 40)


def test_sampling_skips_unusable_rows_to_fill_the_sample(tmp_path):
    rows = [{"text": t} for t in paragraphs(60)] + [{"text": "no"}] * 60 + [{"text": paragraphs(1)[0]}] * 30
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    read = read_source(*source(path, sample_size=50, seed=9), FIELD)
    assert len(read.texts) == 50 and len(set(read.texts)) == 50
    assert read.examined == 50 + read.too_short + read.duplicates


def test_min_chars_normalization_and_dedup(tmp_path):
    rows = [
        {"text": "  The   quick brown fox\n\tjumps over the dog.  "},
        {"text": "The quick brown fox jumps over the dog."},  # duplicate after normalization
        {"text": "Cafe\u0301 culture is lovely in the spring."},
        {"text": "Caf\u00e9 culture is lovely in the spring."},  # same text once NFC-normalized
        {"text": "   tiny text   "},  # 9 characters after strip
        {"text": "exactly ten"},  # 11 characters
        {"text": None},
    ]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    read = read_source(*source(path, min_chars=10), FIELD)
    assert read.texts == ["The quick brown fox jumps over the dog.", "Caf\u00e9 culture is lovely in the spring.", "exactly ten"]
    stats = read.stats()
    assert (stats["rows_read"], stats["too_short"], stats["duplicates"], stats["kept"]) == (7, 2, 2, 3)
    assert stats["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and stats["etag"] is None


# ------------------------------------------------------------------------------------------- stage


def _run(tmp_path, seeds: dict, run_id: str = "r1") -> RunContext:
    spec_path = write_spec(tmp_path, tiny_spec_dict(seeds=seeds))
    return RunContext.create(load_spec(spec_path), run_id)


def load_seeds(run: RunContext) -> dict:
    """The seeds stage under the completion protocol: its committed marker."""
    return execute(run, "seeds")


def test_load_seeds_writes_unified_table(tmp_path, storage_uri):
    web = write_jsonl(tmp_path / "web.jsonl", [{"text": t, "url": "u"} for t in paragraphs(30, "Web")] + [{"text": "short"}])
    write_parquet(tmp_path / "instr" / "a.parquet", {"instruction": [f"How do I explain idea {i} to a child?" for i in range(8)]})
    run = _run(
        tmp_path,
        {
            "outline": str(INCLUDE / "seeds" / "demo_outline.yaml"),
            "web_samples": {"path": "web.jsonl", "sample_size": 20, "seed": 4},  # relative to the spec file
            "instructions": {"path": str(tmp_path / "instr"), "text_column": "instruction"},
        },
    )
    result = load_seeds(run)
    table = storage.read_parquet(result["outputs"]["seeds"])
    assert tuple(table.column_names) == SEED_COLUMNS
    rows = table.to_pylist()
    outline = read_outline(INCLUDE / "seeds" / "demo_outline.yaml")
    kinds = [r["kind"] for r in rows]
    assert kinds == ["outline"] * len(outline) + ["web"] * 20 + ["instruction"] * 8
    assert len({r["seed_id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["seed_id"] == seed_id(r["kind"], r["text"]) and re.fullmatch(r"[0-9a-f]{16}", r["seed_id"])
        if r["kind"] == "outline":
            assert r["subject"] and r["course"] and r["unit"]
        else:
            assert r["subject"] is None and r["course"] is None and r["unit"] is None
    first = rows[0]
    assert (first["subject"], first["unit"], first["text"]) == (outline[0]["subject"], outline[0]["unit"], outline[0]["description"])

    stats = result["stats"]
    assert stats["seeds"] == len(rows)
    assert stats["by_kind"] == {"outline": len(outline), "web": 20, "instruction": 8}
    src = stats["sources"]
    assert src["outline"]["sha256"] == hashlib.sha256((INCLUDE / "seeds" / "demo_outline.yaml").read_bytes()).hexdigest()
    assert src["web_samples"]["path"] == web.as_uri()
    assert src["web_samples"]["sha256"] == hashlib.sha256(web.read_bytes()).hexdigest()
    assert (src["web_samples"]["rows_read"], src["web_samples"]["kept"]) == (31, 20)
    assert src["instructions"]["format"] == "parquet_dir" and len(src["instructions"]["sha256"]) == 64
    saved = storage.read_json(run.layout.marker("seeds"))
    assert saved["outputs"]["seeds"] == result["outputs"]["seeds"] == run.layout.output("seeds", "seeds")
    assert saved["stats"]["by_kind"]["web"] == 20


def test_load_seeds_is_reproducible_and_works_without_outline(tmp_path, storage_uri):
    write_jsonl(tmp_path / "web.jsonl", [{"text": t} for t in paragraphs(50)])
    seeds = {"web_samples": {"path": "web.jsonl", "sample_size": 10, "seed": 1}}
    a = storage.read_parquet(load_seeds(_run(tmp_path, seeds, "a"))["outputs"]["seeds"]).to_pylist()
    b = storage.read_parquet(load_seeds(_run(tmp_path, seeds, "b"))["outputs"]["seeds"]).to_pylist()
    assert a == b and len(a) == 10 and {r["kind"] for r in a} == {"web"}


def test_load_seeds_reports_the_spec_field_of_a_bad_source(tmp_path, storage_uri):
    path = write_jsonl(tmp_path / "instr.jsonl", [{"text": "How do rainbows form in the sky?"}])
    run = _run(tmp_path, {"instructions": {"path": "instr.jsonl", "text_column": "instruction"}})
    with pytest.raises(SeedError, match=rf"^{re.escape(str(path))}: seeds.instructions.text_column: line 1: expected a key 'instruction'"):
        load_seeds(run)


def test_load_seeds_rejects_duplicate_outline_descriptions(tmp_path, storage_uri):
    outline = tmp_path / "o.yaml"
    outline.write_text(
        "subjects:\n  - subject: Bio\n    course: Eco\n    units:\n"
        "      - {title: A, description: Same words here}\n      - {title: B, description: Same  words here}\n"
    )
    with pytest.raises(SeedError, match=r"o.yaml: units.description: expected unique unit descriptions"):
        load_seeds(_run(tmp_path, {"outline": str(outline)}))


# ------------------------------------------------------------------------------------------- demo data


def test_demo_web_samples_parse():
    path = INCLUDE / "seeds" / "demo_web_samples.jsonl"
    read = read_source(*source(path), FIELD)
    assert len(read.texts) >= 250 and read.too_short == 0 and read.duplicates == 0
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(set(o) == {"text", "url"} and o["url"].startswith("https://example.org/") for o in lines)
    assert all(25 <= len(o["text"].split()) <= 90 for o in lines)
    sections = {o["url"].split("/")[3] for o in lines}
    assert len(sections) >= 12  # >= 10 themes plus the low-value ones


def test_demo_instructions_parse():
    path = INCLUDE / "seeds" / "demo_instructions.jsonl"
    texts = read_samples(*source(path, text_column="instruction"), "seeds.instructions")
    assert len(texts) >= 30
    assert all(t.endswith(("?", ".")) for t in texts)


def test_stats_count_removed_rows_by_reason_without_a_cleaner(tmp_path):
    path = write_jsonl(tmp_path / "w.jsonl", [{"text": t} for t in paragraphs(3) + [paragraphs(1)[0], "short", None]])
    cleaned = read_source(*source(path), FIELD).stats()["cleaned"]
    assert cleaned == {"input": 6, "kept": 3, "removed": {"too_short": 2, "duplicate": 1}}


def test_a_cleaner_drops_rows_with_its_reasons_before_length_and_duplicate_checks(tmp_path):
    class Upper:
        reasons = ("shouting",)

        def __call__(self, text):
            return ("", "shouting") if text.isupper() else (" ".join(text.lower().split()), None)

    rows = paragraphs(2) + ["LOUD TEXT THAT IS LONG ENOUGH", paragraphs(1)[0].upper(), "Tiny"]
    path = write_jsonl(tmp_path / "w.jsonl", [{"text": t} for t in rows])
    read = read_source(*source(path), FIELD, Upper())
    assert read.texts == [t.lower() for t in paragraphs(2)]
    assert read.stats()["cleaned"]["removed"] == {"shouting": 2, "too_short": 1, "duplicate": 0}
