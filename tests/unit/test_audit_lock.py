"""tools/audit_lock.py: what it calls audited, what it calls a finding, and what it refuses to call clean."""

import importlib.util
import sys
import urllib.error
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("audit_lock", ROOT / "tools/audit_lock.py")
audit_lock = importlib.util.module_from_spec(_spec)
sys.modules["audit_lock"] = audit_lock  # dataclasses look their module up there
_spec.loader.exec_module(audit_lock)

VULN = {"id": "GHSA-aaaa-bbbb-cccc", "aliases": ["CVE-2026-1", "PYSEC-2026-9"], "fixed_in": ["1.1"],
        "details": "bad things", "link": "https://osv.dev/vulnerability/GHSA-aaaa-bbbb-cccc"}
SAME = {**VULN, "id": "PYSEC-2026-9", "aliases": ["CVE-2026-1", "GHSA-aaaa-bbbb-cccc"]}


def fake_index(per_release: dict, projects: dict):
    def get(url):
        parts = url.removeprefix(audit_lock.INDEX + "/").split("/")
        if len(parts) == 3:  # name/version/json
            return per_release.get((parts[0], parts[1]))
        if parts[0] == "down":
            raise urllib.error.URLError("name not resolved")
        return projects.get(parts[0])
    return get


def test_parse_lock_reads_pins_and_names_a_bad_line():
    text = "# header\nfoo==1.0\nbar[extra]==2.0  # why\ntorch==2.13.0+cpu\n\n"
    assert audit_lock.parse_lock(text) == [("foo", "1.0"), ("bar", "2.0"), ("torch", "2.13.0+cpu")]
    with pytest.raises(ValueError, match=r"req.lock:2: expected 'name==version', got 'baz>=1'"):
        audit_lock.parse_lock("foo==1\nbaz>=1\n", "req.lock")


def test_a_pin_older_than_latest_without_a_release_record_is_not_called_clean():
    get = fake_index({("pinned", "3.0"): {"info": {"version": "3.0"}, "vulnerabilities": [VULN]}},
                     {"old": {"info": {"version": "2.0"}, "vulnerabilities": []},
                      "new": {"info": {"version": "1.0"}, "vulnerabilities": [VULN, SAME]},
                      "pinned": {"info": {"version": "9.9"}, "vulnerabilities": []}})

    results = audit_lock.audit([("old", "1.0"), ("new", "1.0"), ("pinned", "3.0")], get=get, jobs=1)
    assert [(r.name, r.how, len(r.findings)) for r in results] == [
        ("old", "unaudited", 0), ("new", "latest", 2), ("pinned", "release", 1)]
    text, status = audit_lock.report(results, ignore=set())
    assert status == 1
    assert text.count("FINDING") == 2  # one per pin: the PYSEC alias of the same advisory is not repeated
    assert "1 audited by release, 1 audited as the latest release, 1 NOT audited" in text
    assert "NOT audited: old==1.0 (latest 2.0)" in text


def test_an_ignored_advisory_is_justified_by_any_of_its_ids_and_does_not_fail():
    get = fake_index({}, {"new": {"info": {"version": "1.0"}, "vulnerabilities": [VULN]}})
    results = audit_lock.audit([("new", "1.0")], get=get, jobs=1)
    text, status = audit_lock.report(results, ignore={"CVE-2026-1"})
    assert status == 0 and text.count("JUSTIFIED  new==1.0  GHSA-aaaa-bbbb-cccc") == 1


def test_withdrawn_records_do_not_count_and_an_unreachable_index_is_an_error_not_a_pass():
    get = fake_index({}, {"new": {"info": {"version": "1.0"}, "vulnerabilities": [{**VULN, "withdrawn": "2026-01-01"}]}})
    results = audit_lock.audit([("new", "1.0"), ("down", "1.0"), ("gone", "1.0")], get=get, jobs=1)
    assert [(r.how, r.findings) for r in results] == [("latest", []), ("error", []), ("error", [])]
    text, status = audit_lock.report(results, ignore=set())
    assert status == 2
    assert "ERROR  down==1.0: URLError" in text and "ERROR  gone==1.0: https://pypi.org/pypi/gone/json: 404" in text
