"""Agreement of the LLM judge with a small human-labelled set (Cohen's kappa).

The human set is JSONL in the datasets folder: `id`, `input` (the question), `target`
(the reference), `output` (a candidate answer) and `human` (`pass` or `fail`)."""

from __future__ import annotations

import asyncio
import json

from pydantic import BaseModel, ConfigDict

from evals.client import OpenAIClient, RequestFailed
from evals.results import JudgeAgreement
from evals.scorers.judge import LLMJudge, judge
from evals.settings import EvalsSettings
from evals.stats import cohen_kappa
from evals.suites import Suite


class HumanLabel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    input: str
    target: str
    output: str
    human: str


def load_human_labels(path_text: str, settings: EvalsSettings) -> list[HumanLabel]:
    path = settings.datasets_dir / path_text
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [HumanLabel.model_validate(json.loads(line)) for line in rows]


async def calibrate_judge(
    scorer: LLMJudge, suite: Suite, client: OpenAIClient, settings: EvalsSettings
) -> JudgeAgreement:
    min_kappa = settings.judge_min_kappa
    if suite.judge_calibration and suite.judge_calibration.min_kappa is not None:
        min_kappa = suite.judge_calibration.min_kappa
    if suite.judge_calibration is None:
        return JudgeAgreement(
            metric=scorer.name, n=0, kappa=0.0, min_kappa=min_kappa, no_verdict=0, gates=False
        )
    labels = load_human_labels(suite.judge_calibration.human_labels, settings)
    model = str(scorer.options.get("model") or settings.effective_judge_model)

    async def verdict_for(row: HumanLabel) -> str | None:
        try:
            result = await judge(
                client,
                model=model,
                question=row.input,
                reference=row.target,
                candidate=row.output,
                rubric=scorer.rubric,
                repeats=scorer.repeats,
            )
        except RequestFailed:
            return None
        return result.verdict

    verdicts = await asyncio.gather(*(verdict_for(row) for row in labels))
    human = [row.human.upper() for row in labels]
    # No verdict disagrees with every human label: a judge that cannot answer must not
    # earn agreement.
    machine = [v or "NONE" for v in verdicts]
    kappa = cohen_kappa(human, machine) if labels else 0.0
    return JudgeAgreement(
        metric=scorer.name,
        n=len(labels),
        kappa=kappa,
        min_kappa=min_kappa,
        no_verdict=sum(v is None for v in verdicts),
        gates=bool(labels) and kappa >= min_kappa,
    )
