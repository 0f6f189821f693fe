"""Scorer registry: the `type` names usable in suite YAML."""

from __future__ import annotations

from evals.scorers.base import Scorer, ScorerConfigError, ScoreResult, ScoringContext
from evals.scorers.embedding import EmbeddingSimilarity
from evals.scorers.feedback import CorrectionSimilarity
from evals.scorers.judge import LLMJudge
from evals.scorers.rag import SourceRecall
from evals.scorers.refusal import RefusalMatch
from evals.scorers.structured import JsonFieldAccuracy, JsonSchemaValid
from evals.scorers.text import (
    ChoiceMatch,
    ExactMatch,
    Includes,
    NormalisedMatch,
    RegexMatch,
    RougeL,
    TokenF1,
)
from evals.scorers.tools import ToolArgumentAccuracy, ToolArgumentsValid, ToolName
from evals.suites import ScorerSpec

SCORERS: dict[str, type[Scorer]] = {
    "exact": ExactMatch,
    "normalised": NormalisedMatch,
    "includes": Includes,
    "regex": RegexMatch,
    "token_f1": TokenF1,
    "rouge_l": RougeL,
    "choice": ChoiceMatch,
    "json_schema": JsonSchemaValid,
    "json_fields": JsonFieldAccuracy,
    "refusal": RefusalMatch,
    "embedding_similarity": EmbeddingSimilarity,
    "llm_judge": LLMJudge,
    "source_recall": SourceRecall,
    "tool_name": ToolName,
    "tool_arguments_valid": ToolArgumentsValid,
    "tool_argument_accuracy": ToolArgumentAccuracy,
    "correction_similarity": CorrectionSimilarity,
}


def build_scorer(spec: ScorerSpec) -> Scorer:
    try:
        cls = SCORERS[spec.type]
    except KeyError:
        raise ScorerConfigError(
            f"unknown scorer type {spec.type!r} (known: {', '.join(sorted(SCORERS))})"
        ) from None
    return cls(spec.metric_name, spec.options)


__all__ = [
    "SCORERS",
    "ScoreResult",
    "Scorer",
    "ScorerConfigError",
    "ScoringContext",
    "build_scorer",
]
