"""Retrieval scorer for the RAG endpoint: did the answer cite the expected documents?"""

from __future__ import annotations

from pathlib import PurePosixPath

from evals.client import Generation
from evals.datasets import Sample
from evals.scorers.base import Scorer, ScoreResult, ScoringContext


def _matches(expected: str, returned: str) -> bool:
    exp, ret = PurePosixPath(expected), PurePosixPath(returned)
    return ret == exp or returned.endswith(f"/{expected}") or ret.name == exp.name


class SourceRecall(Scorer):
    """Share of `metadata.expected_sources` found among the returned `sources[].path`."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        expected = [str(s) for s in sample.metadata.get("expected_sources", [])]
        if not expected:
            return ScoreResult(None, {"reason": "no expected_sources"})
        returned = [str(s.get("path", "")) for s in generation.sources]
        found = [e for e in expected if any(_matches(e, r) for r in returned)]
        return ScoreResult(len(found) / len(expected), {"returned": returned})
