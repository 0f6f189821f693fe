"""Input/output guardrails: PII detection (e-mail, phone, card with Luhn, IBAN),
a deny-list of terms, and a pluggable moderation check.

PII modes: `off` (nothing), `redact` (replace matches with `[REDACTED_<KIND>]`),
`block` (refuse the request with 400, or the response with 502 on output).

Every pattern is compiled with RE2 (`google-re2`), whose matching time is linear in the
text whatever the input, so no prompt can make a check backtrack for minutes. RE2 has
no look-around: the boundaries the patterns need are `\\b`, a consumed neighbour, or a
check on the character before a candidate (`PiiKind.after_non_digit`). Matching runs on
the views of `gateway.textnorm`, so invisible and look-alike characters hide nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import re2

from gateway.schemas import has_token_ids
from gateway.settings import PiiMode, Settings
from gateway.textnorm import pii_view, term_view

P = ParamSpec("P")
T = TypeVar("T")


def compile_linear(pattern: str) -> Any:
    """An RE2 pattern (linear-time matching); raises `re2.error` when RE2 cannot take it."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


# Group 1 of each pattern is the entity; what lies around it only bounds it.
EMAIL = compile_linear(r"\b([A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
PHONE = compile_linear(
    r"((?:\B\+|\b)\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4})\b"
)
CARD = compile_linear(r"((?:\d[ -]?){12,18}\d)(?:\D|$)")
IBAN = compile_linear(r"\b([A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?)\b")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _card_ok(match: str) -> bool:
    digits = _digits(match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _phone_ok(match: str) -> bool:
    return 8 <= len(_digits(match)) <= 15


@dataclass(frozen=True)
class PiiKind:
    name: str
    pattern: Any  # an RE2 pattern whose group 1 is the entity
    valid: Callable[[str], bool]
    after_non_digit: bool = False  # a candidate right after a digit is no entity


# Order matters: cards and IBANs before phones, whose pattern would match their digits.
PII_KINDS = (
    PiiKind("EMAIL", EMAIL, lambda _: True),
    PiiKind("IBAN", IBAN, iban_valid),
    PiiKind("CARD", CARD, _card_ok, after_non_digit=True),
    PiiKind("PHONE", PHONE, _phone_ok),
)


def candidates(kind: PiiKind, text: str) -> Iterator[tuple[int, int]]:
    """Spans of the kind's candidate entities in text, in order (not yet validated)."""
    for match in kind.pattern.finditer(text):
        start, end = match.span(1)
        if kind.after_non_digit and start > 0 and text[start - 1].isdigit():
            continue
        yield start, end


def _entities(kind: PiiKind, text: str) -> Iterator[tuple[int, int]]:
    return ((s, e) for s, e in candidates(kind, text) if kind.valid(text[s:e]))


def find_pii(text: str) -> list[str]:
    """Kinds of PII present in text as a reader sees it (validated matches only)."""
    view = pii_view(text)
    return [kind.name for kind in PII_KINDS if next(_entities(kind, view), None)]


REDACTION_MARK = "[REDACTED_"


def _redact_kind(kind: PiiKind, text: str) -> str:
    pieces: list[str] = []
    last = 0
    for start, end in _entities(kind, text):
        pieces += [text[last:start], f"{REDACTION_MARK}{kind.name}]"]
        last = end
    return "".join([*pieces, text[last:]]) if pieces else text


def _redact_all(text: str) -> str:
    for kind in PII_KINDS:
        text = _redact_kind(kind, text)
    return text


def redact_pii(text: str) -> str:
    """Text with each validated entity replaced by `[REDACTED_<KIND>]`. When the text
    differs from its normalised view (`gateway.textnorm.pii_view`: invisible characters,
    full-width digits, runs of spaces) and holds PII, the view is redacted and returned
    instead, so that an entity hidden by such characters is redacted whole."""
    view = pii_view(text)
    if view != text and find_pii(view):
        return _redact_all(view)
    return _redact_all(text)


_WORD_CHARS = r"\pL\pN\pM_"


def _is_word_char(char: str) -> bool:
    return char == "_" or unicodedata.category(char)[0] in "LNM"


class DenyList:
    """Deny terms matched on the term view of a text (`gateway.textnorm`): case-folded,
    NFKC, invisible characters removed, whitespace runs as one space. A term is bounded
    on each side where it begins or ends with a letter, digit or underscore, and free
    where it begins or ends with a symbol: `art` is not found in `party`, `c++` is found
    in `I write c++17`, `.net` in `asp.net`."""

    def __init__(self, terms: Sequence[str]) -> None:
        views = sorted({term_view(term) for term in terms} - {""}, key=len, reverse=True)
        groups: dict[tuple[bool, bool], list[str]] = {}
        for view in views:
            sides = (_is_word_char(view[0]), _is_word_char(view[-1]))
            groups.setdefault(sides, []).append(re2.escape(view))
        alternatives = [
            (f"(?:^|[^{_WORD_CHARS}])" if before else "")
            + "(?:"
            + "|".join(escaped)
            + ")"
            + (f"(?:[^{_WORD_CHARS}]|$)" if after else "")
            for (before, after), escaped in groups.items()
        ]
        try:
            self.pattern = compile_linear("|".join(alternatives)) if alternatives else None
        except re2.error as exc:
            raise ValueError(f"GATEWAY_DENY_TERMS cannot be compiled: {exc}") from None

    def __bool__(self) -> bool:
        return self.pattern is not None

    def found_in(self, text: str) -> bool:
        return self.pattern is not None and self.pattern.search(term_view(text)) is not None


class GuardrailViolation(Exception):
    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@runtime_checkable
class Moderator(Protocol):
    """A content check (e.g. a small classifier model) called on the prompt text.

    Return None to allow, or a short reason to refuse with 400. Implementations are
    loaded from `GATEWAY_MODERATION=module:factory`, where `factory(settings)` returns
    the moderator.
    """

    async def check(self, text: str) -> str | None: ...


def load_moderator(spec: str | None, settings: Settings) -> Moderator | None:
    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attr or "create_moderator")
    moderator = factory(settings)
    if not isinstance(moderator, Moderator):
        raise TypeError(f"GATEWAY_MODERATION={spec} did not return a Moderator")
    return moderator


class Guardrails:
    def __init__(self, settings: Settings) -> None:
        self.pii_input: PiiMode = settings.pii_input
        self.pii_output: PiiMode = settings.pii_output
        self.deny = DenyList(settings.deny_terms)
        self.moderator = load_moderator(settings.moderation, settings)
        self.thread_chars = settings.guardrail_thread_chars

    @property
    def inspects_input(self) -> bool:
        return self.pii_input != "off" or bool(self.deny) or self.moderator is not None

    def _active_settings(self) -> str:
        active = [f"GATEWAY_PII_INPUT={self.pii_input}"] if self.pii_input != "off" else []
        active += ["GATEWAY_DENY_TERMS"] if self.deny else []
        active += ["GATEWAY_MODERATION"] if self.moderator is not None else []
        return ", ".join(active)

    def refuse_unreadable(self, payload: Mapping[str, Any]) -> None:
        """Refuse token-id prompts and prompt embeddings while a text check is on: the
        gateway has no tokenizer to turn them back into the text the model reads."""
        for field in ("prompt", "input", "prompt_embeds"):
            value = payload.get(field)
            if has_token_ids(value) or (field == "prompt_embeds" and value is not None):
                raise GuardrailViolation(
                    f"`{field}` holds token ids or embeddings, which this gateway's text "
                    f"guardrails ({self._active_settings()}) cannot read; send it as text.",
                    "unreadable_prompt",
                    param=field,
                )

    async def in_thread_if_long(
        self, chars: int, scan: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a synchronous scan of `chars` characters of text, in a worker thread when
        longer than `GATEWAY_GUARDRAIL_THREAD_CHARS`, so the event loop keeps serving."""
        if chars > self.thread_chars:
            return await asyncio.to_thread(scan, *args, **kwargs)
        return scan(*args, **kwargs)

    async def check_input(self, texts: Sequence[str]) -> None:
        """Raise GuardrailViolation for blocked input (redaction happens separately)."""
        await self.in_thread_if_long(sum(map(len, texts)), self.scan_input, texts)
        if self.moderator is not None:
            reason = await self.moderator.check("\n".join(texts))
            if reason:
                raise GuardrailViolation(f"The request was refused: {reason}", "moderation")

    def scan_input(self, texts: Sequence[str]) -> None:
        """The deny list and the PII block policy over each text (synchronous)."""
        if any(self.deny.found_in(text) for text in texts):
            raise GuardrailViolation("The request contains a denied term.", "content_denied")
        if self.pii_input == "block":
            found = {kind for text in texts for kind in find_pii(text)}
            kinds = [kind.name for kind in PII_KINDS if kind.name in found]
            if kinds:
                raise GuardrailViolation(
                    f"The request contains personal data ({', '.join(kinds)}).", "pii_detected"
                )

    def redact_input(self, text: str) -> str:
        return redact_pii(text) if self.pii_input == "redact" else text

    def filter_output(self, text: str) -> str:
        """Apply the output policy to completion text (raises on `block`)."""
        if self.pii_output == "off" or not text:
            return text
        if self.pii_output == "block":
            kinds = find_pii(text)
            if kinds:
                raise GuardrailViolation(
                    f"The response contained personal data ({', '.join(kinds)}).",
                    "pii_in_output",
                )
            return text
        return redact_pii(text)


class OutputStreamFilter:
    """Applies the output policy to streamed text across chunk boundaries.

    A model streams an e-mail address or card number over several chunks, so each
    chunk alone would pass. The filter holds back the last `HOLD_CHARS` characters
    (longer than any entity it looks for) and never cuts through a match, so every
    entity is checked whole; `flush` releases the rest at the end of the stream.
    """

    HOLD_CHARS = 64

    def __init__(self, guardrails: Guardrails) -> None:
        self.guardrails = guardrails
        self.pending = ""

    def feed(self, text: str) -> str:
        self.pending += text
        split = len(self.pending) - self.HOLD_CHARS
        if split <= 0:
            return ""
        for kind in PII_KINDS:
            for start, end in candidates(kind, self.pending):
                if start < split < end:
                    split = start
        released, self.pending = self.pending[:split], self.pending[split:]
        return self.guardrails.filter_output(released)

    def flush(self) -> str:
        released, self.pending = self.pending, ""
        return self.guardrails.filter_output(released)
