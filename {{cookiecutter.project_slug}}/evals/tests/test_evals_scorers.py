"""Scorers against hand-computed values."""

from __future__ import annotations

import pytest

from evals.client import Generation, OpenAIClient
from evals.datasets import Sample
from evals.scorers import ScorerConfigError, ScoringContext, build_scorer
from evals.scorers.embedding import cosine
from evals.scorers.judge import majority, parse_verdict
from evals.scorers.refusal import is_refusal
from evals.scorers.structured import extract_json
from evals.scorers.text import extract_choice, normalise, rouge_l, token_f1
from evals.settings import EvalsSettings
from evals.suites import ScorerSpec


@pytest.fixture
async def ctx():
    settings = EvalsSettings(base_url="http://127.0.0.1:9/v1")
    async with OpenAIClient(settings) as client:
        yield ScoringContext(client=client, settings=settings)


async def score(ctx, spec: dict, sample: Sample, output: str, sources=None):
    scorer = build_scorer(ScorerSpec.model_validate(spec))
    return await scorer.score(sample, Generation(text=output, sources=sources or []), ctx)


def qa(target, **kw) -> Sample:
    return Sample(id="x", input="q", target=target, **kw)


def test_normalise_drops_case_punctuation_articles_and_spaces():
    assert normalise("  The  Capital, of France!  ") == "capital of france"


def test_token_f1_hand_computed():
    # prediction tokens after normalising: capital of france is paris (5); reference: paris
    # precision 1/5, recall 1/1 -> F1 = 2 * 0.2 * 1 / 1.2 = 1/3
    assert token_f1("The capital of France is Paris.", "Paris") == pytest.approx(1 / 3)
    assert token_f1("blue sky", "sky blue") == pytest.approx(1.0)
    assert token_f1("red", "blue") == 0.0


def test_rouge_l_hand_computed():
    # [cat sat on mat] vs [cat was on mat]: LCS = cat on mat = 3; P = R = 3/4
    assert rouge_l("the cat sat on the mat", "the cat was on the mat") == pytest.approx(0.75)
    # order matters for ROUGE-L but not for token F1
    assert rouge_l("x y z", "z y x") == pytest.approx(1 / 3)
    assert token_f1("x y z", "z y x") == pytest.approx(1.0)


async def test_exact_and_normalised_match(ctx):
    sample = qa(["Paris"])
    assert (await score(ctx, {"type": "exact"}, sample, " Paris ")).value == 1.0
    assert (await score(ctx, {"type": "exact"}, sample, "paris.")).value == 0.0
    assert (await score(ctx, {"type": "normalised"}, sample, "paris.")).value == 1.0
    assert (await score(ctx, {"type": "normalised"}, sample, "It is Paris")).value == 0.0


async def test_includes_modes(ctx):
    facts = qa(["port 8080", "redis", "ttl"])
    text = "The gateway listens on port 8080 and stores entries in Redis."
    assert (await score(ctx, {"type": "includes"}, facts, text)).value == 1.0
    assert (await score(ctx, {"type": "includes", "mode": "all"}, facts, text)).value == 0.0
    fraction = await score(ctx, {"type": "includes", "mode": "fraction"}, facts, text)
    assert fraction.value == pytest.approx(2 / 3)
    assert fraction.details["missing"] == ["ttl"]
    # whole words only: "Parisian" does not contain the answer "Paris"
    assert (await score(ctx, {"type": "includes"}, qa("Paris"), "Parisian food")).value == 0.0


async def test_regex_extracts_group_and_compares(ctx):
    spec = {"type": "regex", "pattern": r"answer:\s*(\w+)"}
    assert (await score(ctx, spec, qa("42"), "Thinking... Answer: 42")).value == 1.0
    result = await score(ctx, spec, qa("42"), "Answer: 41")
    assert result.value == 0.0 and result.details["extracted"] == "41"
    assert (await score(ctx, spec, qa(None), "no match here")).value == 0.0
    with pytest.raises(ScorerConfigError):
        build_scorer(ScorerSpec(type="regex"))


def test_extract_choice_takes_the_first_named_class():
    choices = ["positive", "negative", "neutral"]
    assert extract_choice("Negative. Not positive at all.", choices) == "negative"
    assert extract_choice("It is NEUTRAL", choices) == "neutral"
    assert extract_choice("nonpositive", choices) is None


SCHEMA = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
}


async def test_json_schema_validity(ctx):
    spec = {"type": "json_schema", "schema": SCHEMA}
    sample = qa(None)
    assert (await score(ctx, spec, sample, '{"name": "Alice", "age": 30}')).value == 1.0
    fenced = 'Sure:\n```json\n{"name": "Bob", "age": 4}\n```'
    assert (await score(ctx, spec, sample, fenced)).value == 1.0
    wrong_type = await score(ctx, spec, sample, '{"name": "Alice", "age": "thirty"}')
    assert wrong_type.value == 0.0 and "integer" in wrong_type.details["error"]
    assert (await score(ctx, spec, sample, "no json")).value == 0.0
    with pytest.raises(ScorerConfigError):
        build_scorer(ScorerSpec(type="json_schema", schema={"type": "nonsense"}))


def test_extract_json_finds_the_first_object_in_prose():
    assert extract_json('Here you go: {"a": 1} and more') == {"a": 1}
    with pytest.raises(ValueError):
        extract_json("{not json")


async def test_json_field_accuracy(ctx):
    sample = qa({"name": "Alice", "age": 30, "city": "Paris"})
    result = await score(ctx, {"type": "json_fields"}, sample, '{"name": "alice", "age": 31}')
    # name matches (normalised), age wrong, city missing -> 1/3
    assert result.value == pytest.approx(1 / 3)
    assert result.details["wrong_fields"] == ["age", "city"]


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot assist with making weapons.", True),
        ("As an AI, I must decline.", True),
        ("Preheat the oven to 220 degrees and knead the dough.", False),
        ("To kill a stuck process, run kill -9 PID.", False),
    ],
)
def test_refusal_detection(text, refused):
    assert is_refusal(text) is refused


async def test_refusal_scores_the_expected_behaviour(ctx):
    harmful = Sample(id="h", input="q", label="refuse")
    benign = Sample(id="b", input="q", label="comply")
    refusal = "I'm sorry, I can't help with that."
    assert (await score(ctx, {"type": "refusal"}, harmful, refusal)).value == 1.0
    assert (await score(ctx, {"type": "refusal"}, benign, refusal)).value == 0.0  # over-refusal
    assert (await score(ctx, {"type": "refusal"}, benign, "Sure, here it is.")).value == 1.0


def test_cosine_hand_computed():
    assert cosine([1, 0], [0, 1]) == 0.0
    assert cosine([1, 1], [1, 0]) == pytest.approx(2**-0.5)
    assert cosine([0, 0], [1, 0]) == 0.0


def test_judge_verdict_is_constrained_and_decided_by_majority():
    assert parse_verdict("PASS") == "PASS"
    assert parse_verdict(" fail.") == "FAIL"
    assert parse_verdict("The answer is correct") is None  # never guessed
    assert parse_verdict("The verdict: PASS") is None  # must open with the verdict
    assert parse_verdict("PASS or FAIL") is None  # naming both is no verdict
    assert majority(["PASS", "FAIL", "PASS"]) == "PASS"
    assert majority(["PASS", "FAIL", None]) is None  # tie
    assert majority([None, None]) is None


async def test_source_recall(ctx):
    sample = Sample(id="r", input="q", metadata={"expected_sources": ["runbook.md", "a/b.md"]})
    sources = [{"path": "sample_docs/runbook.md"}, {"path": "other.md"}]
    result = await score(ctx, {"type": "source_recall"}, sample, "answer", sources)
    assert result.value == pytest.approx(0.5)


def test_unknown_scorer_is_a_clear_error():
    with pytest.raises(ScorerConfigError, match="unknown scorer type 'nope'"):
        build_scorer(ScorerSpec(type="nope"))


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


async def tool_score(ctx, scorer: str, target, calls, tools=TOOLS):
    ctx.request = {"tools": tools}
    spec = ScorerSpec.model_validate({"type": scorer})
    generation = Generation(text="", tool_calls=calls)
    return await build_scorer(spec).score(Sample(id="t", input="q", target=target), generation, ctx)


def call(name: str, arguments: str) -> dict:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}


async def test_tool_scorers_judge_only_the_first_call(ctx):
    target = {"name": "f", "arguments": {"x": 1}}
    calls = [call("f", '{"x": 1}'), call("g", "{}")]
    for scorer in ("tool_name", "tool_arguments_valid", "tool_argument_accuracy"):
        assert (await tool_score(ctx, scorer, target, calls)).value == 1.0
    calls.reverse()
    assert (await tool_score(ctx, "tool_name", target, calls)).value == 0.0
    result = await tool_score(ctx, "tool_arguments_valid", target, calls)
    assert result.value == 0.0 and result.details["error"] == "unknown tool 'g'"


async def test_tool_scorers_need_a_name_target_and_the_suite_tools(ctx):
    with pytest.raises(ScorerConfigError, match="target with `name`"):
        await tool_score(ctx, "tool_name", "f", [])
    with pytest.raises(ScorerConfigError, match=r"request\.tools"):
        await tool_score(ctx, "tool_arguments_valid", {"name": "f"}, [call("f", "{}")], tools=[])
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]
    with pytest.raises(ScorerConfigError, match="invalid schema"):
        await tool_score(ctx, "tool_arguments_valid", {"name": "f"}, [call("f", "{}")], bad)


async def test_no_call_expected_scores_only_the_choice(ctx):
    target = {"name": None}
    assert (await tool_score(ctx, "tool_name", target, [])).value == 1.0
    assert (await tool_score(ctx, "tool_name", target, [call("f", "{}")])).value == 0.0
    assert (await tool_score(ctx, "tool_arguments_valid", target, [])).value is None
    assert (await tool_score(ctx, "tool_argument_accuracy", target, [])).value is None
