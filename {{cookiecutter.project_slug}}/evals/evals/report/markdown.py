"""report.md: a summary fit for a pull-request comment."""

from __future__ import annotations

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


def table_md(table: Table) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"**{table.title}**", "", "| " + " | ".join(table.headers) + " |"]
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines) + "\n"


def status_line(report: Report) -> str:
    if report.exit_code == 2:
        return "❌ **Run failed** (endpoint or request errors)"
    if report.gate is None:
        return "No gate evaluated"
    return "✅ **Gate passed**" if report.gate.passed else "❌ **Gate failed**"


def suite_parts(suites: list[SuiteResult]) -> list[str]:
    parts = []
    for suite in suites:
        if suite.status != "ok":
            parts.append(f"- suite **{suite.name}** {suite.status}: {suite.reason}\n")
            continue
        parts.append(table_md(suite_table(suite)))
        if suite.structured_output:
            parts.append(f"Structured output: {suite.structured_output}.\n")
        for extra in (category_table(suite), classification_table(suite), judge_table(suite)):
            if extra is not None:
                parts.append(table_md(extra))
    return parts


def render_markdown(report: Report) -> str:
    parts = [
        f"## Evals {report.kind} report `{report.run_id}`",
        "",
        f"{status_line(report)} · model `{report.model}` · endpoint `{report.endpoint}` · "
        f"{report.duration_s:.1f} s",
        "",
    ]
    for error in report.errors:
        parts.append(f"- ⚠️ {error}")
    if report.errors:
        parts.append("")
    if report.gate is not None and report.gate.failures:
        parts.append("**Gate failures**\n")
        parts += [f"- `{c.suite}.{c.metric}` ({c.kind}): {c.message}" for c in report.gate.failures]
        parts.append("")
    comparison = report.comparison
    if comparison is not None:
        parts.append(table_md(comparison_table(report.model, comparison)))
        parts.append(f"### Candidate `{report.model}`\n")
    parts += suite_parts(report.suites)
    if comparison is not None:
        parts.append(f"### Base `{comparison.base_model}`\n")
        parts += suite_parts(comparison.base_suites)
    if report.perf is not None:
        parts.append(table_md(perf_table(report.perf)))
        if report.perf.buffering is not None:
            b = report.perf.buffering
            verdict = "⚠️ buffering suspected" if b.buffered else "no buffering"
            parts.append(
                f"Streaming check vs direct model service: {verdict} (TTFT p50 "
                f"{b.endpoint_ttft_p50_ms:.0f} vs {b.direct_ttft_p50_ms:.0f} ms, ITL p50 "
                f"{b.endpoint_itl_p50_ms:.0f} vs {b.direct_itl_p50_ms:.0f} ms).\n"
            )
    if report.gate is not None and report.gate.checks:
        parts.append("<details><summary>All gate checks</summary>\n")
        parts.append(table_md(gate_table(report.gate)))
        parts.append("</details>\n")
    return "\n".join(parts)
