"""LLM-as-judge: a rubric, temperature 0, a verdict constrained to PASS/FAIL, repeated
and decided by majority vote. Whether it may gate is decided by its agreement with
human labels (Cohen's kappa, see evals.stats)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from evals.client import Generation, OpenAIClient
from evals.datasets import Sample
from evals.scorers.base import Scorer, ScoreResult, ScoringContext

VERDICTS = ("PASS", "FAIL")
_VERDICT = re.compile(r"^\W*(PASS|FAIL)\b", re.IGNORECASE)

JUDGE_SYSTEM = (
    "You are a strict grader. Read the question, the reference answer and the candidate "
    "answer, apply the criteria, and reply with exactly one word: PASS or FAIL."
)
DEFAULT_RUBRIC = "PASS if the candidate answer states the same fact as the reference answer."


def judge_messages(
    question: str, reference: str, candidate: str, rubric: str
) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": (
                f"Question: {question}\nReference answer: {reference}\n"
                f"Candidate answer: {candidate}\nCriteria: {rubric}\n"
                "Verdict (PASS or FAIL):"
            ),
        },
    ]


def parse_verdict(text: str) -> str | None:
    """The reply must open with PASS or FAIL and not name both; anything else is no
    verdict (never guessed)."""
    match = _VERDICT.match(text)
    if match is None or re.search(r"\bPASS\b.*\bFAIL\b|\bFAIL\b.*\bPASS\b", text, re.I | re.S):
        return None
    return match.group(1).upper()


@dataclass
class Verdict:
    verdict: str | None
    votes: list[str | None]


async def judge(
    client: OpenAIClient,
    *,
    model: str,
    question: str,
    reference: str,
    candidate: str,
    rubric: str,
    repeats: int,
) -> Verdict:
    votes: list[str | None] = []
    for i in range(repeats):
        generation = await client.chat(
            judge_messages(question, reference, candidate, rubric),
            model=model,
            salt=f"judge-repeat-{i}",
            temperature=0.0,
            max_tokens=4,
            seed=i,
        )
        votes.append(parse_verdict(generation.text))
    return Verdict(majority(votes), votes)


def majority(votes: list[str | None]) -> str | None:
    """The most common verdict; None when there is no verdict or a tie."""
    ranked = Counter(v for v in votes if v is not None).most_common()
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def question_text(sample: Sample) -> str:
    if isinstance(sample.input, str):
        return sample.input
    return next((m.content for m in reversed(sample.input) if m.role == "user"), "")


class LLMJudge(Scorer):
    kind = "judge"

    @property
    def rubric(self) -> str:
        return str(self.options.get("rubric", DEFAULT_RUBRIC))

    @property
    def repeats(self) -> int:
        return int(self.options.get("repeats", 3))

    async def score(
        self, sample: Sample, generation: Generation, ctx: ScoringContext
    ) -> ScoreResult:
        result = await judge(
            ctx.client,
            model=str(self.options.get("model") or ctx.settings.effective_judge_model),
            question=question_text(sample),
            reference=" / ".join(sample.targets),
            candidate=generation.text,
            rubric=self.rubric,
            repeats=self.repeats,
        )
        value = None if result.verdict is None else float(result.verdict == "PASS")
        return ScoreResult(value, {"verdict": result.verdict, "votes": result.votes})
