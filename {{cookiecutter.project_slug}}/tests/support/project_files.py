"""The project's own non-Python files (compose.yaml, .env.example, dashboards), as a user
of this bake sees them.

In a generated project they are read as they are. In the template repository they are
still cookiecutter templates; there they are rendered with the template's default
answers, so the same tests run in both places.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Written so that this file holds no template markers itself (it is copied verbatim).
TEMPLATE_MARKERS = ("{" * 2 + " cookiecutter.", "{" + "%")


@cache
def default_answers() -> dict[str, Any]:
    """The answers a user gets by pressing enter (template repository only)."""
    import jinja2

    questions = json.loads((PROJECT_ROOT.parent / "cookiecutter.json").read_text())
    answers: dict[str, Any] = {}
    for key, value in questions.items():
        if key.startswith("_"):
            continue
        if isinstance(value, list):
            answers[key] = value[0]
        elif isinstance(value, str):
            answers[key] = jinja2.Template(value).render(cookiecutter=answers)
        else:
            answers[key] = value
    return answers


def text(relative: str) -> str:
    raw = (PROJECT_ROOT / relative).read_text()
    if not any(marker in raw for marker in TEMPLATE_MARKERS):
        return raw
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(raw).render(cookiecutter=default_answers())


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(text("compose.yaml"))
    return document


def env_example() -> dict[str, str]:
    """`.env.example` as compose and python-dotenv read it (no interpolation)."""
    from io import StringIO

    from dotenv import dotenv_values

    values = dotenv_values(stream=StringIO(text(".env.example")), interpolate=False)
    return {key: value or "" for key, value in values.items()}


class MissingVariableError(KeyError):
    pass


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Reference:
    """One `${NAME<op>ARG}` in compose.yaml."""

    name: str
    op: str
    arg: str


def references(source: str) -> list[Reference]:
    found = []
    for match in _VARIABLE.finditer(source):
        name = match["braced"] or match["named"]
        if name:
            found.append(Reference(name, match["op"] or "", match["arg"] or ""))
    return found


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation, applied to every string of a document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"] or "", match["arg"] or ""
        current = env.get(name)
        unset_or_empty = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if unset_or_empty else str(current)
        if op.endswith("?"):
            if unset_or_empty:
                raise MissingVariableError(f"{name}: {arg}")
            return str(current)
        if op.endswith("+"):
            return "" if unset_or_empty else arg
        return current or ""

    return _VARIABLE.sub(replace, value)
