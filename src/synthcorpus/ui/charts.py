"""Chart specs for the pages: plain plotly.js figure dicts (``{"data": [...], "layout": {...}}``) built
from the read model. The browser draws them with the ``plotly.min.js`` that PyPI ``plotly`` ships inside
its package, served by the plugin itself: no CDN, nothing downloaded at run time, and no per-request
rendering cost on the server (a chart is a few hundred bytes of JSON)."""

from __future__ import annotations

from typing import Any

_LAYOUT = {"margin": {"l": 48, "r": 12, "t": 36, "b": 40}, "height": 260, "font": {"size": 11},
           "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)", "legend": {"orientation": "h"}}


def _figure(title: str, data: list[dict[str, Any]], **layout: Any) -> dict[str, Any]:
    return {"data": data, "layout": {**_LAYOUT, "title": {"text": title, "font": {"size": 13}}, **layout}}


def bar(title: str, counts: dict[str, Any], *, horizontal: bool = False, limit: int = 20) -> dict[str, Any]:
    items = sorted(((str(k), v) for k, v in counts.items() if v is not None), key=lambda kv: -kv[1])[:limit]
    keys, values = [k for k, _ in items], [v for _, v in items]
    if horizontal:
        return _figure(title, [{"type": "bar", "orientation": "h", "y": keys[::-1], "x": values[::-1]}],
                       height=max(200, 22 * len(keys) + 60), margin={**_LAYOUT["margin"], "l": 160})
    return _figure(title, [{"type": "bar", "x": keys, "y": values}])


def histogram(title: str, hist: dict[str, int], bins: int = 20) -> dict[str, Any]:
    """A word-count histogram from ``{value: count}`` (the gate profile), in at most ``bins`` bars."""
    values = sorted((int(k), v) for k, v in hist.items())
    if not values:
        return _figure(title, [])
    lo, hi = values[0][0], values[-1][0]
    width = max(1, -(-(hi - lo + 1) // bins))
    buckets: dict[int, int] = {}
    for value, count in values:
        start = lo + (value - lo) // width * width
        buckets[start] = buckets.get(start, 0) + count
    return _figure(title, [{"type": "bar", "x": [f"{s}–{s + width - 1}" if width > 1 else str(s) for s in buckets],
                            "y": list(buckets.values())}], xaxis={"title": {"text": "words"}})


def funnel(steps: list[dict[str, Any]]) -> dict[str, Any]:
    known = [s for s in steps if s["count"] is not None]
    return _figure("Funnel", [{"type": "funnel", "y": [s["step"] for s in known], "x": [s["count"] for s in known],
                               "textinfo": "value"}], margin={**_LAYOUT["margin"], "l": 110})


def over_versions(title: str, versions: list[dict[str, Any]], series: dict[str, str], *, kind: str = "bar",
                  y_title: str | None = None) -> dict[str, Any]:
    """One trace per ``series`` (label -> key of a version row) over the versions, oldest first."""
    x = [v["version"] for v in versions]
    data = [{"type": kind, "name": label, "x": x, "y": [v.get(key) for v in versions],
             **({"mode": "lines+markers"} if kind == "scatter" else {})} for label, key in series.items()]
    layout: dict[str, Any] = {"xaxis": {"type": "category"}}
    if y_title:
        layout["yaxis"] = {"title": {"text": y_title}}
    return _figure(title, data, **layout)


def filtered_by_reason(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """The share of generated documents each filter reason removed, stacked per version."""
    reasons = sorted({r for v in versions for r in v["filtered_share_by_reason"]})
    x = [v["version"] for v in versions]
    data = [{"type": "bar", "name": r, "x": x, "y": [v["filtered_share_by_reason"].get(r, 0) for v in versions]} for r in reasons]
    empty = {} if reasons else {"annotations": [{"text": "no version had a document filtered", "showarrow": False,
                                                  "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}]}
    return _figure("Filtered share by reason", data, barmode="stack", showlegend=True, xaxis={"type": "category"},
                   yaxis={"tickformat": ".0%", "rangemode": "tozero"}, **empty)


def corpus_charts(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not versions:
        return []
    return [
        over_versions("Rows per version", versions, {"rows": "rows", "new rows": "new_rows"}),
        filtered_by_reason(versions),
        over_versions("Duplicate rate and language match", versions,
                      {"duplicate rate": "duplicate_rate", "language match": "language_match_rate"}, kind="scatter"),
        over_versions("Contaminated documents", versions, {"contaminated": "contaminated"}),
        over_versions("Completion tokens", versions, {"tokens": "completion_tokens"}),
        over_versions("Cost (USD)", versions, {"cost": "cost_usd"}, kind="scatter"),
    ]


def distribution_charts(profile: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not profile:
        return []
    counts = profile.get("counts", {})
    charts = [bar(f"Documents per {d}", counts.get(d, {}), horizontal=d == "topic") for d in ("format", "audience", "language", "topic")]
    charts.append(histogram("Word count", profile.get("n_words", {})))
    return charts


def score_charts(judge: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The judge's scores: documents per score 0-5, one series per rubric dimension; the mean per format
    and per audience. Nothing when no document was scored (an empty chart would look like low scores)."""
    if not judge or not judge.get("scored"):
        return []
    hist = judge.get("histogram") or {}
    charts = [_figure("Documents per score (0–5)", [
        {"type": "bar", "name": d.replace("_", " "), "x": [str(v) for v in range(len(h))], "y": h} for d, h in hist.items()],
        barmode="group", showlegend=True, xaxis={"type": "category"})]
    for group in ("format", "audience"):
        means = judge.get("mean_by", {}).get(group) or {}
        if means:
            charts.append(_figure(f"Mean overall score per {group}", [
                {"type": "bar", "x": list(means), "y": list(means.values())}], yaxis={"range": [0, 5]}))
    return charts
