"""The bake matrix, as data (in the manner of cookiecutter-django's generation tests).

- DEFAULT: the answers a user gets by pressing enter.
- ONE_FACTOR: every non-default value of every choice, one at a time.
- PAIRWISE: a covering array for the risky options (backend x deploy target x RAG x
  semantic cache): every pair of values of any two of them appears in some bake, in
  9 bakes instead of the 36 of the full product.
- UNSUPPORTED: answers the pre-gen hook must reject, with a fragment of its reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COOKIECUTTER_JSON = json.loads((ROOT / "cookiecutter.json").read_text())

CHOICE_KEYS = [
    key for key, value in COOKIECUTTER_JSON.items() if isinstance(value, list) and key[0] != "_"
]
DEFAULT: dict[str, str] = {key: COOKIECUTTER_JSON[key][0] for key in CHOICE_KEYS}

ONE_FACTOR: list[dict[str, str]] = [
    {key: value} for key in CHOICE_KEYS for value in COOKIECUTTER_JSON[key][1:]
]

_RISKY = ("serving_backend", "deploy_target", "enable_rag", "enable_semantic_cache")
_PAIRWISE_ROWS = [
    ("auto", "kubernetes", "yes", "no"),
    ("auto", "aws-eks", "no", "yes"),
    ("auto", "none", "yes", "yes"),
    ("vllm", "kubernetes", "no", "yes"),
    ("vllm", "aws-eks", "yes", "no"),
    ("vllm", "none", "no", "no"),
    ("transformers", "kubernetes", "yes", "yes"),
    ("transformers", "aws-eks", "no", "no"),
    ("transformers", "none", "yes", "no"),
]
PAIRWISE: list[dict[str, str]] = [dict(zip(_RISKY, row, strict=True)) for row in _PAIRWISE_ROWS]

UNSUPPORTED: list[tuple[dict[str, str], str]] = [
    ({"project_slug": "My App"}, "project_slug"),
    ({"project_slug": "1app"}, "project_slug"),
    ({"project_slug": "app-"}, "project_slug"),
    ({"project_slug": "a" * 41}, "project_slug"),
    ({"author_email": "nobody"}, "author_email"),
    ({"llm_model": "not a model"}, "llm_model"),
    ({"embedding_model": "http://example/model"}, "embedding_model"),
    ({"serving_backend": "vllm", "llm_model": "./models/m.Q4_1.gguf"}, "cannot serve a .gguf"),
    ({"enable_rag": "yes", "embedding_model": "./models/minilm.gguf"}, "RAG needs"),
]


def answers(overrides: dict[str, Any]) -> dict[str, Any]:
    """Full answers for a bake: defaults with overrides applied."""
    return {**DEFAULT, **overrides}


def bake_id(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "defaults"
    return ",".join(f"{key}={value}" for key, value in overrides.items())


def unique_bakes() -> list[dict[str, str]]:
    """Every bake of the matrix once, defaults first (identical answers are merged)."""
    seen: set[str] = set()
    bakes: list[dict[str, str]] = []
    for overrides in [{}, *ONE_FACTOR, *PAIRWISE]:
        full = json.dumps(answers(overrides), sort_keys=True)
        if full not in seen:
            seen.add(full)
            # Keep only what differs from the defaults, so ids read well.
            bakes.append({k: v for k, v in overrides.items() if DEFAULT.get(k) != v})
    return bakes


# The baked project's test folders whose outcome an answer can change. Python files are
# copied verbatim, so an answer changes only which files exist and the rendered
# configuration (.env.example, compose.yaml, Makefile, stack files); the root tests/
# folder checks those configuration files against the code. The default bake runs the
# whole suite (test_baked_e2e.py); every other bake runs the folders its answers touch.
OPTION_TEST_DIRS: dict[str, list[str]] = {
    "serving_backend": ["services/model/tests", "tests"],
    "deploy_target": ["infra/tests", "tests"],
    "enable_rag": ["gateway/tests", "evals/tests", "tests"],
    "enable_semantic_cache": ["tests"],
    "observability": ["infra/tests", "tests"],
    "ci_provider": ["tests"],
}


def folders_for_answers(overrides: dict[str, Any]) -> list[str]:
    dirs: set[str] = set()
    for key, value in overrides.items():
        if DEFAULT.get(key) != value:
            dirs.update(OPTION_TEST_DIRS.get(key, []))
    return sorted(dirs)
