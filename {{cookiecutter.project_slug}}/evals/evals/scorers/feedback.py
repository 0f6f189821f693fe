"""Similarity to a user's correction, for datasets and online scores from feedback."""

from __future__ import annotations

from evals.client import Generation
from evals.datasets import Sample
from evals.scorers.base import Scorer, ScoreResult, ScoringContext
from evals.scorers.text import rouge_l


class CorrectionSimilarity(Scorer):
    """ROUGE-L against the correction (the sample's target); unscored without one, so
    exchanges rated without a correction neither raise nor lower the mean."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        if not sample.targets:
            return ScoreResult(None, {"reason": "no correction"})
        return ScoreResult(max(rouge_l(generation.text, t) for t in sample.targets))
