"""HTML of the Corpora pages: Jinja templates (``ui/templates``) with autoescaping on, so document text,
topic labels and spec values are always escaped. ``base`` is the URL prefix the app is mounted at."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from . import charts


@lru_cache(maxsize=1)
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("synthcorpus.ui", "templates"), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True)


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def corpora_page(base: str, corpora_dir: str, corpora: list[dict[str, Any]], broken: dict[str, list[Any]]) -> str:
    return render("corpora.html", base=base, corpora_dir=corpora_dir, corpora=corpora, broken=broken)


def corpus_page(base: str, corpus: str, dag_id: str, *, summary: dict[str, Any] | None, airflow: dict[str, Any],
                versions: list[dict[str, Any]], runs: list[dict[str, Any]], spec_text: str | None,
                problems: list[Any]) -> str:
    return render("corpus.html", base=base, corpus=corpus, dag_id=dag_id, summary=summary, airflow=airflow,
                  versions=versions, runs=runs, spec_text=spec_text, problems=problems,
                  charts=charts.corpus_charts(versions))


def run_page(base: str, report: dict[str, Any], dag_run_id: str) -> str:
    airflow_root = base.removesuffix("/corpora")  # the plugin's mount prefix (ui.plugin.URL_PREFIX)
    return render("run.html", base=base, airflow_root=airflow_root, r=report, dag_run_id=dag_run_id,
                  funnel_chart=charts.funnel(report["funnel"]),
                  distribution_charts=charts.distribution_charts(report["distributions"]),
                  score_charts=charts.score_charts(report.get("judge")))


def diff_page(base: str, corpus: str, dag_id: str, diff: dict[str, Any]) -> str:
    return render("diff.html", base=base, corpus=corpus, dag_id=dag_id, d=diff,
                  profile_charts={s: charts.distribution_charts(diff["profiles"][s]) for s in ("a", "b")})


def message_page(base: str, title: str, message: str) -> str:
    return render("message.html", base=base, title=title, message=message)
