"""Semantic similarity between output and target via the embedding endpoint."""

from __future__ import annotations

import numpy as np

from evals.client import Generation
from evals.datasets import Sample
from evals.scorers.base import Scorer, ScoreResult, ScoringContext


def cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb) / denom if denom else 0.0


class EmbeddingSimilarity(Scorer):
    """Highest cosine similarity to any target, clipped to [0, 1]."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        if not sample.targets:
            return ScoreResult(None, {"reason": "no target"})
        if not generation.text.strip():
            return ScoreResult(0.0, {"reason": "empty output"})
        model = self.options.get("model") or ctx.settings.embedding_model
        vectors = await ctx.client.embed([generation.text, *sample.targets], model=str(model))
        similarity = max(cosine(vectors[0], v) for v in vectors[1:])
        return ScoreResult(min(max(similarity, 0.0), 1.0), {"cosine": round(similarity, 4)})
