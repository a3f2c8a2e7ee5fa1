"""Audit requirements.lock against PyPI's live vulnerability records (OSV data, as pip-audit's default service).

pip-audit asks PyPI's per-release JSON API (/pypi/<name>/<version>/json) for each pin. Where that endpoint
answers 404 (this workplace's index does), pip-audit skips every package and prints "No known
vulnerabilities found" for nothing. This script asks the per-release endpoint first and, when it is not
there, the project endpoint (/pypi/<name>/json), whose ``vulnerabilities`` are those of the latest release:
exact for a pin that *is* the latest release. A pin older than the latest release that the per-release
endpoint does not answer for is reported as NOT audited, never as clean.

    python tools/audit_lock.py [requirements.lock] [--ignore ID ...] [--json FILE]

Exit status: 0 when no finding outside --ignore, 1 when there is one, 2 when the index could not be reached
for some pin. Unaudited pins are listed, and do not change the exit status (they are a limit of the feed,
not a finding).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

INDEX = "https://pypi.org/pypi"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?==([^\s;]+)")


@dataclass
class Result:
    name: str
    version: str
    how: str  # "release" | "latest" | "unaudited" | "error"
    latest: str | None = None
    findings: list[dict] = field(default_factory=list)
    error: str | None = None


def parse_lock(text: str, path: str = "requirements.lock") -> list[tuple[str, str]]:
    """(name, version) for every ``name==version`` line; any other non-comment line is an error naming it."""
    pins = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # pip options (-r, --hash, ...)
            continue
        m = _PIN.match(line)
        if not m:
            raise ValueError(f"{path}:{lineno}: expected 'name==version', got {raw.strip()!r}")
        pins.append((m.group(1), m.group(2)))
    return pins


def _get_json(url: str, timeout: float = 30) -> dict | None:
    """The JSON at url, or None on 404. Other failures raise."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def _live(vulns: list[dict]) -> list[dict]:
    return [v for v in vulns if not v.get("withdrawn")]


def audit_one(name: str, version: str, get=_get_json) -> Result:
    try:
        release = get(f"{INDEX}/{name}/{version}/json")
        if release is not None:
            return Result(name, version, "release", release.get("info", {}).get("version"),
                          _live(release.get("vulnerabilities") or []))
        project = get(f"{INDEX}/{name}/json")
    except Exception as e:  # noqa: BLE001 - reported per pin, the run goes on
        return Result(name, version, "error", error=f"{type(e).__name__}: {e}")
    if project is None:
        return Result(name, version, "error", error=f"{INDEX}/{name}/json: 404 (not on the index)")
    latest = project.get("info", {}).get("version")
    if latest == version:
        return Result(name, version, "latest", latest, _live(project.get("vulnerabilities") or []))
    return Result(name, version, "unaudited", latest)


def audit(pins: list[tuple[str, str]], get=_get_json, jobs: int = 16) -> list[Result]:
    with cf.ThreadPoolExecutor(jobs) as ex:
        return list(ex.map(lambda p: audit_one(*p, get=get), pins))


def _ids(v: dict) -> set[str]:
    return {v.get("id", "")} | set(v.get("aliases") or [])


def report(results: list[Result], ignore: set[str]) -> tuple[str, int]:
    lines, status = [], 0
    counts = {k: sum(r.how == k for r in results) for k in ("release", "latest", "unaudited", "error")}
    lines.append(f"{len(results)} pins: {counts['release']} audited by release, {counts['latest']} audited as the "
                 f"latest release, {counts['unaudited']} NOT audited (older than the latest, no per-release record), "
                 f"{counts['error']} errors")
    for r in results:
        seen: set[str] = set()
        for v in r.findings:
            if _ids(v) & seen:  # the same advisory under another database's id (GHSA / PYSEC / CVE)
                continue
            seen |= _ids(v)
            justified = bool(_ids(v) & ignore)
            if not justified:
                status = max(status, 1)
            fixed = ", ".join(v.get("fixed_in") or []) or "no fixed release"
            lines.append(f"{'JUSTIFIED' if justified else 'FINDING'}  {r.name}=={r.version}  {v.get('id')}"
                         f" ({', '.join(sorted(set(v.get('aliases') or [])))}); fixed in: {fixed}; {v.get('link', '')}")
            lines.append(f"    {(v.get('details') or v.get('summary') or '').strip()[:400]}")
    for r in results:
        if r.how == "error":
            status = 2
            lines.append(f"ERROR  {r.name}=={r.version}: {r.error}")
    unaudited = [f"{r.name}=={r.version} (latest {r.latest})" for r in results if r.how == "unaudited"]
    if unaudited:
        lines.append("NOT audited: " + "; ".join(unaudited))
    return "\n".join(lines), status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lock", nargs="?", default="requirements.lock")
    ap.add_argument("--ignore", action="append", default=[], help="an advisory id (or alias) justified in the README")
    ap.add_argument("--json", help="also write every pin's result to this file")
    a = ap.parse_args(argv)
    try:
        pins = parse_lock(Path(a.lock).read_text(), a.lock)
    except (OSError, ValueError) as e:
        print(f"audit_lock: {e}", file=sys.stderr)
        return 2
    results = audit(pins)
    text, status = report(results, set(a.ignore))
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
