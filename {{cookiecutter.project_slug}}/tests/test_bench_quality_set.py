"""The model benchmark's quality set (bench/quality_set.py): size, normalisation and the
score with its standard error, against hand-computed values."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from quality_set import EXAMPLES, QUESTIONS, correct, messages, normalise, score


def test_the_set_has_at_least_40_distinct_questions_none_of_them_an_example():
    questions = [q for _, q, _ in QUESTIONS]
    assert len(questions) >= 40
    assert len(set(questions)) == len(questions)
    assert not {q for q, _ in EXAMPLES} & set(questions)
    assert {c for c, _, _ in QUESTIONS} == {"capital", "arithmetic", "colour", "opposite", "fact"}


@pytest.mark.parametrize(
    ("answer", "accepted", "right"),
    [
        ("Paris", ("Paris",), True),
        ("Paris", "Paris", True),  # one accepted answer as a plain string
        ("P", "Paris", False),
        ("  paris.\n\nIt is in France.", ("Paris",), True),  # first line only
        ("The answer: Seven!", ("7",), False),  # "answer" is an extra word
        ("Seven.", ("7",), True),
        ("ninety-nine", ("99", "ninety nine"), True),
        ("the sky is blue", ("blue",), False),  # a sentence is not the answer
        ("Paris is the capital", ("Paris",), False),
        ("", ("Paris",), False),
    ],
)
def test_exact_match_after_normalisation(answer, accepted, right):
    assert correct(answer, accepted) is right


def test_normalise_drops_case_punctuation_articles_and_spells_numbers():
    assert normalise("The  Lion!") == "lion"
    assert normalise("Twelve") == "12"


def test_score_and_standard_error_hand_computed():
    answers = [accepted[0] for _, _, accepted in QUESTIONS]
    answers[:10] = ["no idea"] * 10
    result = score(answers)
    n = len(QUESTIONS)
    p = (n - 10) / n
    assert result["correct"] == n - 10 and result["questions"] == n
    assert result["exact_match"] == pytest.approx(p)
    # sample standard deviation (ddof = 1) over 0/1 hits, divided by sqrt(n)
    assert result["stderr"] == pytest.approx(math.sqrt(p * (1 - p) * n / (n - 1) / n))
    assert result["by_category"]["capital"] == "4/14"
    with pytest.raises(ValueError, match="answers"):
        score(answers[:-1])


def test_messages_put_the_instruction_and_examples_before_the_question():
    turns = messages("What is the capital of Peru?")
    assert turns[0]["role"] == "system" and turns[-1]["content"] == "What is the capital of Peru?"
    assert [t["role"] for t in turns[1:-1]] == ["user", "assistant"] * len(EXAMPLES)
