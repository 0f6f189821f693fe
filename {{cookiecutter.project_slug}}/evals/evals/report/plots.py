"""Plots as base64 PNG data (matplotlib, Agg backend), so the HTML needs no network."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from evals.perf.metrics import PerfReport
from evals.results import SuiteResult
from evals.stats import ClassificationReport


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def category_scores(suite: SuiteResult) -> str | None:
    """Per-category means with bootstrap 95% CIs, one bar group per category."""
    metrics = [m for m in suite.metrics.values() if m.per_category]
    if not metrics:
        return None
    categories = sorted({c for m in metrics for c in m.per_category})
    width = 0.8 / len(metrics)
    x = np.arange(len(categories))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(categories) + 2), 3.4))
    for i, metric in enumerate(metrics):
        means, lows, highs = [], [], []
        for category in categories:
            s = metric.per_category.get(category)
            means.append(s.mean if s else np.nan)
            lows.append(s.mean - s.ci_low if s else 0.0)
            highs.append(s.ci_high - s.mean if s else 0.0)
        ax.bar(x + i * width, means, width, yerr=[lows, highs], capsize=3, label=metric.name)
    ax.set_xticks(x + width * (len(metrics) - 1) / 2, categories, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% CI)")
    ax.set_title(f"{suite.name}: scores by category")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def confusion(report: ClassificationReport, title: str) -> str:
    matrix = np.asarray(report.confusion_matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * matrix.shape[1], 1.0 + 0.8 * matrix.shape[0]))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(matrix.shape[1]), report.confusion_columns, rotation=30, ha="right")
    ax.set_yticks(range(matrix.shape[0]), report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        color = "white" if value > threshold else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=color)
    ax.set_title(title)
    return _png(fig)


def latency_distributions(perf: PerfReport) -> str | None:
    scenarios = [s for s in perf.scenarios if s.ttft_samples_s]
    if not scenarios:
        return None
    fig, (ax_ttft, ax_itl) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [s.name for s in scenarios]
    ax_ttft.boxplot([np.asarray(s.ttft_samples_s) * 1000 for s in scenarios], showfliers=True)
    ax_ttft.set_xticks(range(1, len(labels) + 1), labels, rotation=25, ha="right", fontsize=8)
    ax_ttft.set_ylabel("TTFT (ms)")
    ax_ttft.axhline(perf.slo.ttft_ms, color="red", linestyle="--", linewidth=1, label="SLO")
    ax_ttft.legend(fontsize=8)
    itl = [np.asarray(s.itl_samples_s or [np.nan]) * 1000 for s in scenarios]
    ax_itl.boxplot(itl, showfliers=False)
    ax_itl.set_xticks(range(1, len(labels) + 1), labels, rotation=25, ha="right", fontsize=8)
    ax_itl.set_ylabel("ITL (ms)")
    fig.suptitle("Latency distributions")
    return _png(fig)


def throughput_vs_concurrency(perf: PerfReport) -> str | None:
    sweep = sorted(
        (s for s in perf.scenarios if s.mode == "concurrency" and s.target == "endpoint"),
        key=lambda s: s.concurrency or 0,
    )
    if not sweep:
        return None
    x = [s.concurrency or 0 for s in sweep]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(x, [s.output_throughput for s in sweep], marker="o", label="output tok/s")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("output tokens / s")
    ax2 = ax.twinx()
    ax2.plot(
        x, [s.request_throughput for s in sweep], marker="s", color="tab:orange", label="req/s"
    )
    ax2.plot(x, [s.goodput for s in sweep], marker="^", color="tab:green", label="goodput req/s")
    ax2.set_ylabel("requests / s")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    ax.set_title("Throughput vs concurrency")
    return _png(fig)
