"""The model benchmark's quality set: short factual questions a 135M instruct model
sometimes gets right, asked greedy for a one-word answer and scored by exact match
after normalisation, with the standard error of the score.

No model code here, so any benchmark (in process or over HTTP) can ask the questions
with `messages(question)` and score the answers, in `QUESTIONS` order, with
`score(answers)`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

INSTRUCTION = "Answer with a single word or number only."
MAX_TOKENS = 16

#: (category, question, accepted answers); the first answer is the reference
QUESTIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("capital", "What is the capital of France?", ("Paris",)),
    ("capital", "What is the capital of Italy?", ("Rome",)),
    ("capital", "What is the capital of Japan?", ("Tokyo",)),
    ("capital", "What is the capital of Germany?", ("Berlin",)),
    ("capital", "What is the capital of Spain?", ("Madrid",)),
    ("capital", "What is the capital of the United Kingdom?", ("London",)),
    ("capital", "What is the capital of Russia?", ("Moscow",)),
    ("capital", "What is the capital of China?", ("Beijing", "Peking")),
    ("capital", "What is the capital of Egypt?", ("Cairo",)),
    ("capital", "What is the capital of Canada?", ("Ottawa",)),
    ("capital", "What is the capital of Greece?", ("Athens",)),
    ("capital", "What is the capital of Portugal?", ("Lisbon",)),
    ("capital", "What is the capital of Ireland?", ("Dublin",)),
    ("capital", "What is the capital of Norway?", ("Oslo",)),
    ("arithmetic", "What is 2 plus 2?", ("4",)),
    ("arithmetic", "What is 3 plus 5?", ("8",)),
    ("arithmetic", "What is 10 minus 3?", ("7",)),
    ("arithmetic", "What is 4 times 2?", ("8",)),
    ("arithmetic", "What is 6 plus 3?", ("9",)),
    ("arithmetic", "What is 12 minus 2?", ("10",)),
    ("arithmetic", "What is 5 plus 6?", ("11",)),
    ("arithmetic", "What is 3 times 3?", ("9",)),
    ("arithmetic", "What is 1 plus 1?", ("2",)),
    ("arithmetic", "What is 100 minus 1?", ("99", "ninety nine")),
    ("colour", "What color is the sky on a clear day?", ("blue",)),
    ("colour", "What color is grass?", ("green",)),
    ("colour", "What color is snow?", ("white",)),
    ("colour", "What color is a ripe banana?", ("yellow",)),
    ("colour", "What color is a ripe tomato?", ("red",)),
    ("colour", "What color is coal?", ("black",)),
    ("opposite", "What is the opposite of hot?", ("cold",)),
    ("opposite", "What is the opposite of up?", ("down",)),
    ("opposite", "What is the opposite of big?", ("small", "little")),
    ("opposite", "What is the opposite of day?", ("night",)),
    ("opposite", "What is the opposite of fast?", ("slow",)),
    ("opposite", "What is the opposite of open?", ("closed", "close", "shut")),
    ("opposite", "What is the opposite of yes?", ("no",)),
    ("opposite", "What is the opposite of left?", ("right",)),
    ("fact", "How many days are in a week?", ("7",)),
    ("fact", "How many months are in a year?", ("12",)),
    ("fact", "How many legs does a spider have?", ("8",)),
    ("fact", "What is the largest planet in the solar system?", ("Jupiter",)),
    ("fact", "Which planet is known as the Red Planet?", ("Mars",)),
    ("fact", "What do bees make?", ("honey",)),
    ("fact", "Which animal is known as the king of the jungle?", ("lion", "lions")),
    ("fact", "What is frozen water called?", ("ice",)),
]

_NUMBERS = {
    word: str(i)
    for i, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()  # noqa: SIM905
    )
}
_ARTICLES = {"a", "an", "the"}


def normalise(text: str) -> str:
    """The first line, lower case, punctuation dropped (hyphens become spaces), articles
    dropped, number words zero to twelve written as digits, whitespace collapsed — so
    "The answer: Seven." and "7" are equal, "Paris is the capital" and "Paris" are not."""
    lines = text.strip().splitlines()
    first = lines[0].lower() if lines else ""
    first = re.sub(r"[^\w\s-]", "", first).replace("-", " ")
    words = [_NUMBERS.get(w, w) for w in first.split() if w not in _ARTICLES]
    return " ".join(words)


def correct(answer: str, accepted: str | Sequence[str]) -> bool:
    """Exact match after `normalise` against any accepted answer (one, or several)."""
    options = (accepted,) if isinstance(accepted, str) else accepted
    return normalise(answer) in {normalise(a) for a in options}


#: worked examples as earlier turns (none of them in the set): a 135M model ignores the
#: instruction alone and answers in a sentence, which exact match cannot score
EXAMPLES = [
    ("What is the capital of Peru?", "Lima"),
    ("What is 7 plus 1?", "8"),
    ("What is the opposite of wet?", "dry"),
]


def messages(question: str) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": INSTRUCTION}]
    for example, answer in EXAMPLES:
        turns += [{"role": "user", "content": example}, {"role": "assistant", "content": answer}]
    return [*turns, {"role": "user", "content": question}]


def score(answers: Sequence[str]) -> dict[str, Any]:
    """Share right, its standard error (ddof = 1, as the evals report it) and counts."""
    if len(answers) != len(QUESTIONS):
        raise ValueError(f"expected {len(QUESTIONS)} answers, got {len(answers)}")
    hits = [correct(a, q[2]) for a, q in zip(answers, QUESTIONS, strict=True)]
    n, right = len(hits), sum(hits)
    mean = right / n
    variance = sum((h - mean) ** 2 for h in hits) / (n - 1)
    by_category: dict[str, list[int]] = {}
    for hit, (category, _, _) in zip(hits, QUESTIONS, strict=True):
        by_category.setdefault(category, []).append(int(hit))
    return {
        "exact_match": mean,
        "stderr": math.sqrt(variance / n),
        "correct": right,
        "questions": n,
        "by_category": {c: f"{sum(v)}/{len(v)}" for c, v in by_category.items()},
    }
