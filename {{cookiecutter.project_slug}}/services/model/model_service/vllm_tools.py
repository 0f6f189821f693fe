"""What vLLM needs to answer tool requests the way the transformers backend does.

`tool_choice="auto"` needs `--enable-auto-tool-choice` and a tool-call parser for the
model family (MODEL_TOOL_CALL_PARSER; `auto` picks by the config's `model_type`);
`--tool-strict-level parameter` makes every call's arguments follow the tool's schema,
as the grammar does on the transformers backend. A model whose chat template knows
nothing of tools gets the same Hermes fallback template the transformers backend uses
(tools.tool_aware_template), so both backends build the same prompts and the `hermes`
parser reads the calls.
"""

from __future__ import annotations

import json
from pathlib import Path

from model_service.settings import ModelSettings
from model_service.tools import tool_aware_template

# vLLM parser names per Hugging Face `model_type`, for templates that bring their own
# tool format; anything else (and every fallback-template model) uses `hermes`.
PARSER_BY_MODEL_TYPE = {
    "qwen2": "hermes",
    "qwen3": "hermes",
    "mistral": "mistral",
    "granite": "granite",
    "internlm2": "internlm",
}


def model_chat_template(model_dir: Path) -> str | None:
    standalone = model_dir / "chat_template.jinja"
    if standalone.is_file():
        return standalone.read_text()
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def model_type(model_dir: Path) -> str:
    config = model_dir / "config.json"
    return str(json.loads(config.read_text()).get("model_type", "")) if config.is_file() else ""


def tool_args(settings: ModelSettings, model_dir: Path, workdir: Path) -> list[str]:
    """vLLM arguments for tool calling; writes the fallback template into `workdir`."""
    if settings.task != "generate" or settings.tool_call_parser == "none":
        return []
    template = model_chat_template(model_dir)
    wrapped = tool_aware_template(template)
    args: list[str] = []
    parser = PARSER_BY_MODEL_TYPE.get(model_type(model_dir), "hermes")
    if wrapped is not None and wrapped != template:
        path = workdir / "chat_template.jinja"
        path.write_text(wrapped)
        args += ["--chat-template", str(path)]
        parser = "hermes"
    if settings.tool_call_parser != "auto":
        parser = settings.tool_call_parser
    # `parameter`: every tool's arguments follow its schema, as if each were `strict`;
    # vLLM's own default constrains them only for `strict: true` tools, where the
    # transformers backend always does.
    return [
        *args,
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        parser,
        "--tool-strict-level",
        "parameter",
    ]
