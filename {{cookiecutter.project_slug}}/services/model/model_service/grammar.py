"""Grammar-constrained decoding with llguidance: request fields to a grammar, a grammar
to a per-request matcher.

One grammar describes everything a request allows: OpenAI's `response_format`
(`json_object`, `json_schema`), vLLM's `structured_outputs` (`json`, `regex`, `choice`,
`json_object`) and the tool-call grammars built in `tools.py`. The grammar text is
llguidance's Lark dialect; `compile` turns it into an `LLMatcher` that the per-request
sampler (`sampling.py`) asks for a token mask before each step and feeds the chosen
token after it. Why llguidance and not xgrammar: see docs/model-service.md.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import llguidance
import llguidance.hf
import torch

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# vLLM's StructuredOutputsParams fields this backend implements, and those it refuses.
STRUCTURED_KINDS = ("json", "regex", "choice", "json_object")
UNSUPPORTED_STRUCTURED = ("grammar", "structural_tag")
# JSON is written with ", " and ": " and no other whitespace: a small model left free
# to add whitespace can emit it until max_tokens (a failure vLLM's docs warn about).
JSON_LAYOUT: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


class GrammarError(ValueError):
    """The request's grammar, schema or regex is invalid; `param` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# A repetition bound past any context a served model has: every item or character costs at
# least one token, so such a bound can never be met, and llguidance would spend minutes
# (seen: a hung request) unrolling `minItems: 1000000000` into a grammar.
MAX_SCHEMA_BOUND = 1 << 16
SIZE_KEYWORDS = (
    "minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties",
    "minContains", "maxContains",
)  # fmt: skip


def check_schema_bounds(schema: Any, param: str, depth: int = 0) -> None:
    """400 for a size bound no generation could meet, anywhere in `schema`."""
    if depth > 64:
        raise GrammarError("the JSON schema nests deeper than 64 levels", param)
    if isinstance(schema, list):
        for item in schema:
            check_schema_bounds(item, param, depth + 1)
        return
    if not isinstance(schema, dict):
        return
    for keyword in SIZE_KEYWORDS:
        bound = schema.get(keyword)
        if isinstance(bound, int | float) and bound > MAX_SCHEMA_BOUND:
            raise GrammarError(
                f"JSON schema `{keyword}: {bound}` exceeds {MAX_SCHEMA_BOUND}", param
            )
    for value in schema.values():
        check_schema_bounds(value, param, depth + 1)


def json_schema_grammar(schema: Any, param: str) -> str:
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    if not isinstance(schema, dict):
        raise GrammarError("the JSON schema must be an object", param)
    check_schema_bounds(schema, param)
    try:
        return str(llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT))
    except ValueError as error:
        raise GrammarError(f"invalid JSON schema: {error}", param) from error


def choice_grammar(choices: list[str]) -> str:
    # JSON string literals are valid Lark literals, so any text is escaped correctly.
    return "start: " + " | ".join(json.dumps(c) for c in choices)


def from_response_format(response_format: dict[str, Any] | None) -> str | None:
    """The grammar for OpenAI's `response_format`, or None for plain text."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return json_schema_grammar({"type": "object"}, "response_format")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise GrammarError(
                "response_format.json_schema must be an object with a `schema`",
                "response_format",
            )
        return json_schema_grammar(spec.get("schema", {}), "response_format")
    raise GrammarError(
        f"response_format type {kind!r} is not supported (text, json_object, json_schema)",
        "response_format",
    )


def from_structured_outputs(fields: dict[str, Any] | None) -> str | None:
    """The grammar for vLLM's `structured_outputs` (same field names as vLLM)."""
    if not fields:
        return None
    refused = [k for k in UNSUPPORTED_STRUCTURED if fields.get(k) is not None]
    if refused:
        raise GrammarError(
            f"structured_outputs.{refused[0]} is not supported by the transformers backend "
            f"(use one of {', '.join(STRUCTURED_KINDS)})",
            "structured_outputs",
        )
    given = [k for k in STRUCTURED_KINDS if fields.get(k) is not None]
    if len(given) != 1:
        raise GrammarError(
            "structured_outputs needs exactly one of " + ", ".join(STRUCTURED_KINDS),
            "structured_outputs",
        )
    kind, value = given[0], fields[given[0]]
    if kind == "json":
        return json_schema_grammar(parsed_schema(value), "structured_outputs")
    if kind == "json_object":
        return json_schema_grammar({"type": "object"}, "structured_outputs")
    if kind == "regex":
        if not isinstance(value, str):
            raise GrammarError("structured_outputs.regex must be a string", "structured_outputs")
        return str(llguidance.LLMatcher.grammar_from_regex(value))
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise GrammarError(
            "structured_outputs.choice must be a non-empty list of strings", "structured_outputs"
        )
    return choice_grammar(value)


def parsed_schema(value: Any) -> Any:
    """vLLM takes `structured_outputs.json` as an object or as its JSON text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as error:
        raise GrammarError(
            f"structured_outputs.json is not valid JSON: {error}", "structured_outputs"
        ) from error


COMPILED_CACHE_SIZE = 128


class GrammarCompiler:
    """Compiles grammar text into matchers for one tokenizer (built once, on first use:
    wrapping a 50k-token vocabulary takes about half a second)."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, eos_token_id: int) -> None:
        self._hf_tokenizer = hf_tokenizer
        self._vocab_size = vocab_size
        self._eos = eos_token_id
        self._tokenizer: Any = None
        self._compiled: dict[str, Any] = {}  # grammar text -> matcher, oldest first
        self._lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.hf.from_tokenizer(
                    self._hf_tokenizer, n_vocab=self._vocab_size, eos_token=self._eos
                )
            return self._tokenizer

    def compile(self, grammar: str, param: str) -> Any:
        """The matcher for `grammar`, to be copied per request (`deep_copy`); raises
        GrammarError naming `param` if invalid.

        Compiled matchers are kept (least recently used out): a matcher builds its lexer
        states lazily, and copies share them, so the first requests with a new schema
        pay for states that later ones with the same schema reuse (measured here: 16
        concurrent json_schema requests on SmolLM2 ran at 5 tok/s on fresh matchers and
        75 tok/s on a warm one)."""
        with self._lock:
            cached = self._compiled.pop(grammar, None)
            if cached is not None:
                self._compiled[grammar] = cached  # most recently used last
                return cached
        matcher = llguidance.LLMatcher(self.tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"invalid grammar: {matcher.get_error()}", param)
        with self._lock:
            self._compiled[grammar] = matcher
            while len(self._compiled) > COMPILED_CACHE_SIZE:
                self._compiled.pop(next(iter(self._compiled)))
        return matcher


def allowed_tokens(matcher: Any, vocab_size: int) -> torch.Tensor:
    """The boolean mask (vocab,) of tokens the matcher allows next."""
    words = (vocab_size + 31) // 32
    bitmask = torch.empty(words, dtype=torch.int32)
    matcher.unsafe_compute_mask_ptr(bitmask.data_ptr(), words * 4)
    shifts = torch.arange(32, dtype=torch.int32)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.view(-1)[:vocab_size].bool()
