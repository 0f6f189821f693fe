"""report.html: one self-contained file (inline CSS, plots as data: URIs, no scripts),
so it opens offline and can be attached to CI runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from jinja2 import Environment, select_autoescape

from evals.perf.metrics import DEFINITIONS
from evals.report import plots
from evals.report.markdown import status_line
from evals.report.tables import (
    Table,
    category_table,
    classification_table,
    gate_table,
    judge_table,
    perf_table,
    suite_table,
)
from evals.results import Report

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Evals report {{ report.run_id }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3} .fail{color:#b00020;font-weight:bold} .pass{color:#137333}
img{max-width:100%;display:block;margin:.5rem 0 1.5rem} code{background:#f3f3f3;padding:0 .2rem}
</style></head><body>
<h1>Evals {{ report.kind }} report <code>{{ report.run_id }}</code></h1>
<p>{{ status }} · model <code>{{ report.model }}</code> · endpoint
<code>{{ report.endpoint }}</code> · {{ '%.1f' % report.duration_s }} s ·
{{ report.created_at }}</p>
{% for error in report.errors %}<p class="fail">{{ error }}</p>{% endfor %}
{% macro table(t) %}<h3>{{ t.title }}</h3><table>
<tr>{% for h in t.headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endmacro %}
{% for s in sections %}<section><h2>{{ s.title }}</h2>
{% if s.note %}<p>{{ s.note }}</p>{% endif %}
{% for t in s.tables %}{{ table(t) }}{% endfor %}
{% for img in s.images %}
<img alt="{{ img.alt }}" src="data:image/png;base64,{{ img.data }}">{% endfor %}
</section>{% endfor %}
{% if definitions %}<h2>Definitions</h2><ul>{% for k, v in definitions.items() %}
<li><b>{{ k }}</b>: {{ v }}</li>{% endfor %}</ul>{% endif %}
</body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


@dataclass
class Image:
    alt: str
    data: str


@dataclass
class Section:
    title: str
    note: str | None = None
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def _image(alt: str, data: str | None) -> list[Image]:
    return [Image(alt, data)] if data else []


def render_html(report: Report) -> str:
    sections: list[Section] = []
    if report.gate is not None and report.gate.checks:
        sections.append(Section("Gate", tables=[gate_table(report.gate)]))
    for suite in report.suites:
        if suite.status != "ok":
            sections.append(Section(f"Suite {suite.name}", note=f"{suite.status}: {suite.reason}"))
            continue
        tables: list[Table] = [suite_table(suite)]
        tables += [
            t
            for t in (category_table(suite), classification_table(suite), judge_table(suite))
            if t is not None
        ]
        images = _image(f"{suite.name} scores by category", plots.category_scores(suite))
        if suite.classification is not None:
            images += _image(
                f"{suite.name} confusion matrix",
                plots.confusion(suite.classification, f"{suite.name}: confusion matrix"),
            )
        sections.append(Section(f"Suite {suite.name}", suite.description, tables, images))
    if report.perf is not None:
        perf = report.perf
        note = None
        if perf.buffering is not None:
            b = perf.buffering
            note = (
                "Streaming check vs direct model service: "
                f"{'BUFFERING SUSPECTED' if b.buffered else 'no buffering'} ({b.rule})."
            )
        images = _image("latency distributions", plots.latency_distributions(perf))
        images += _image("throughput vs concurrency", plots.throughput_vs_concurrency(perf))
        sections.append(Section("Performance", note, [perf_table(perf)], images))
    return _env.from_string(_TEMPLATE).render(
        report=report,
        status=status_line(report).replace("*", ""),
        sections=sections,
        definitions=DEFINITIONS if report.perf is not None else None,
    )
