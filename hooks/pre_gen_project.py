"""Validate the answers before anything is written.

Cookiecutter renders this file with the answers; they arrive as JSON through
`| tojson` (never pasted into code), so any value is safe here. The functions below
are plain Python and unit-tested in tests/test_hooks.py.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

SLUG_RE = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

CHOICES = {
    "serving_backend": ("auto", "vllm", "transformers"),
    "deploy_target": ("kubernetes", "aws-eks", "none"),
    "enable_rag": ("yes", "no"),
    "enable_semantic_cache": ("no", "yes"),
    "observability": ("otel-lgtm", "otlp-external", "none"),
    "ci_provider": ("github", "none"),
}

# Combinations that cannot work, as data: (condition, reason).
UNSUPPORTED: list[tuple[dict[str, Any], str]] = [
    (
        {"serving_backend": "vllm", "llm_model": lambda v: str(v).endswith(".gguf")},
        "serving_backend=vllm cannot serve a .gguf file: choose auto or transformers, "
        "or convert it first with `model-service prepare`",
    ),
    (
        {"enable_semantic_cache": "yes", "embedding_model": lambda v: str(v).endswith(".gguf")},
        "the semantic cache needs a sentence-transformers embedding model, not a .gguf file",
    ),
    (
        {"enable_rag": "yes", "embedding_model": lambda v: str(v).endswith(".gguf")},
        "RAG needs a sentence-transformers embedding model, not a .gguf file",
    ),
]


def _is_model_ref(value: str) -> bool:
    """A hub id (org/name), a local directory or a local .gguf file."""
    if HUB_ID_RE.match(value):
        return True
    return value.startswith(("/", "./", "../", "~/")) and " " not in value


def _matches(condition: dict[str, Any], answers: dict[str, Any]) -> bool:
    for key, expected in condition.items():
        value = answers.get(key)
        if callable(expected):
            if not expected(value):
                return False
        elif value != expected:
            return False
    return True


def validate(answers: dict[str, Any]) -> list[str]:
    """Every problem with the answers, each as a one-line reason."""
    errors: list[str] = []
    if not str(answers.get("project_name", "")).strip():
        errors.append("project_name must not be empty")
    slug = str(answers.get("project_slug", ""))
    if not SLUG_RE.match(slug):
        errors.append(
            f"project_slug {slug!r} must be a DNS label: lowercase letters, digits and dashes, "
            "starting with a letter, at most 40 characters"
        )
    email = str(answers.get("author_email", ""))
    if not EMAIL_RE.match(email):
        errors.append(f"author_email {email!r} is not an e-mail address")
    for key in ("llm_model", "embedding_model"):
        value = str(answers.get(key, ""))
        if not _is_model_ref(value):
            errors.append(
                f"{key} {value!r} must be a hub id like org/name, or a local path "
                "starting with / or ./"
            )
    for key, allowed in CHOICES.items():
        if answers.get(key) not in allowed:
            errors.append(f"{key} must be one of {', '.join(allowed)} (got {answers.get(key)!r})")
    for condition, reason in UNSUPPORTED:
        if _matches(condition, answers):
            errors.append(f"unsupported combination: {reason}")
    return errors


def main(answers: dict[str, Any]) -> int:
    errors = validate(answers)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(json.loads(r"""{{ cookiecutter | tojson }}""")))
