"""The scorer interface. A scorer turns (sample, generation) into a value in [0, 1]."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from evals.client import Generation, OpenAIClient
from evals.datasets import Sample
from evals.settings import EvalsSettings


@dataclass
class ScoreResult:
    """`value` is None when the sample cannot be scored (e.g. the judge gave no verdict);
    such samples are counted, not averaged."""

    value: float | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoringContext:
    client: OpenAIClient
    settings: EvalsSettings
    #: the suite's request parameters (scorers read e.g. `tools` from it)
    request: dict[str, Any] = field(default_factory=dict)


class Scorer(ABC):
    #: Metrics from this scorer only gate when the scorer says so (see the judge).
    kind: str = "generic"

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name = name
        self.options = options

    @abstractmethod
    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult: ...


class ScorerConfigError(ValueError):
    pass
