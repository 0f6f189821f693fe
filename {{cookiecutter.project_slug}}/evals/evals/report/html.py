"""report.html: one self-contained file (inline CSS, plots as data: URIs, no scripts),
so it opens offline and can be attached to CI runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from jinja2 import Environment, PackageLoader, select_autoescape

from evals.perf.metrics import DEFINITIONS
from evals.report import plots
from evals.report.markdown import status_line
from evals.report.tables import (
    Table,
    category_table,
    classification_table,
    comparison_table,
    gate_table,
    judge_table,
    perf_table,
    suite_table,
)
from evals.results import Report, SuiteResult

# The page layout lives in report.html.j2 beside this module (a package data file, copied
# verbatim by cookiecutter), so no Python file carries template syntax.
_env = Environment(
    loader=PackageLoader("evals.report", ""),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


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


def suite_sections(suites: list[SuiteResult], prefix: str) -> list[Section]:
    sections = []
    for suite in suites:
        title = f"{prefix}Suite {suite.name}"
        if suite.status != "ok":
            sections.append(Section(title, note=f"{suite.status}: {suite.reason}"))
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
        about = suite.description
        if suite.structured_output:
            about = f"{about} Structured output: {suite.structured_output}.".strip()
        sections.append(Section(title, about, tables, images))
    return sections


def render_html(report: Report) -> str:
    sections: list[Section] = []
    if report.gate is not None and report.gate.checks:
        sections.append(Section("Gate", tables=[gate_table(report.gate)]))
    comparison = report.comparison
    if comparison is not None:
        sections.append(
            Section(
                "Candidate against base",
                f"candidate {report.model}, base {comparison.base_model}",
                [comparison_table(report.model, comparison)],
            )
        )
    sections += suite_sections(report.suites, "" if comparison is None else "candidate: ")
    if comparison is not None:
        sections += suite_sections(comparison.base_suites, "base: ")
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
    return _env.get_template("report.html.j2").render(
        report=report,
        status=status_line(report).replace("*", ""),
        sections=sections,
        definitions=DEFINITIONS if report.perf is not None else None,
    )
