"""Text-matching scorers: exact, normalised, includes, regex, token F1, ROUGE-L, choice."""

from __future__ import annotations

import re
import string
from collections import Counter

from evals.client import Generation
from evals.datasets import Sample
from evals.scorers.base import Scorer, ScorerConfigError, ScoreResult, ScoringContext

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> str:
    """SQuAD-style: lower case, drop punctuation and articles, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return normalise(text).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) over normalised tokens."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def best(values: list[float]) -> float:
    return max(values) if values else 0.0


class ExactMatch(Scorer):
    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        out = generation.text.strip()
        return ScoreResult(float(any(out == t.strip() for t in sample.targets)))


class NormalisedMatch(Scorer):
    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        out = normalise(generation.text)
        return ScoreResult(float(any(out == normalise(t) for t in sample.targets)))


class Includes(Scorer):
    """Targets found in the output. mode `any` (acceptable answers), `all`, or `fraction`
    (the share of expected facts present, for RAG)."""

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        mode = self.options.get("mode", "any")
        out = f" {normalise(generation.text)} "
        found = [t for t in sample.targets if f" {normalise(t)} " in out]
        missing = [t for t in sample.targets if t not in found]
        if not sample.targets:
            return ScoreResult(None, {"reason": "no target"})
        if mode == "any":
            value = float(bool(found))
        elif mode == "all":
            value = float(not missing)
        elif mode == "fraction":
            value = len(found) / len(sample.targets)
        else:
            raise ScorerConfigError(f"includes: unknown mode {mode!r}")
        return ScoreResult(value, {"missing": missing} if missing else {})


class RegexMatch(Scorer):
    """Extract with `pattern` (group 1 if present) and compare normalised to the targets;
    without targets the score is whether the pattern matched at all."""

    def __init__(self, name: str, options: dict[str, object]) -> None:
        super().__init__(name, options)
        pattern = options.get("pattern")
        if not isinstance(pattern, str):
            raise ScorerConfigError("regex scorer needs a `pattern` string")
        self.pattern = re.compile(pattern, re.IGNORECASE | re.DOTALL)

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        match = self.pattern.search(generation.text)
        if match is None:
            return ScoreResult(0.0, {"extracted": None})
        extracted = match.group(1) if match.groups() else match.group(0)
        if not sample.targets:
            return ScoreResult(1.0, {"extracted": extracted})
        ok = any(normalise(extracted) == normalise(t) for t in sample.targets)
        return ScoreResult(float(ok), {"extracted": extracted})


class TokenF1(Scorer):
    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        return ScoreResult(best([token_f1(generation.text, t) for t in sample.targets]))


class RougeL(Scorer):
    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        return ScoreResult(best([rouge_l(generation.text, t) for t in sample.targets]))


def extract_choice(text: str, choices: list[str]) -> str | None:
    """The choice named first in the output (whole words, case-insensitive)."""
    first: tuple[int, str] | None = None
    for choice in choices:
        match = re.search(rf"(?<!\w){re.escape(choice)}(?!\w)", text, re.IGNORECASE)
        if match and (first is None or match.start() < first[0]):
            first = (match.start(), choice)
    return first[1] if first else None


class ChoiceMatch(Scorer):
    """Classification: the predicted class is the first choice named in the output."""

    kind = "classification"

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        if not sample.choices or sample.label is None:
            raise ScorerConfigError(f"sample {sample.id}: choice scorer needs choices and label")
        predicted = extract_choice(generation.text, sample.choices)
        return ScoreResult(float(predicted == sample.label), {"predicted": predicted})
