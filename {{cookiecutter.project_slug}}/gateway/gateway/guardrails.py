"""Input/output guardrails: PII detection (e-mail, phone, card with Luhn, IBAN),
a deny-list of terms, and a pluggable moderation check.

PII modes: `off` (nothing), `redact` (replace matches with `[REDACTED_<KIND>]`),
`block` (refuse the request with 400, or the response with 502 on output).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.settings import PiiMode, Settings

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
PHONE = re.compile(
    r"(?<![\w+])\+?\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){2,4}(?!\w)"
)
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")


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


def _card_ok(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _phone_ok(match: str) -> bool:
    return 8 <= len(re.sub(r"\D", "", match)) <= 15


@dataclass(frozen=True)
class PiiKind:
    name: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool]


# Order matters: cards and IBANs before phones, whose pattern would match their digits.
PII_KINDS = (
    PiiKind("EMAIL", EMAIL, lambda _: True),
    PiiKind("IBAN", IBAN, iban_valid),
    PiiKind("CARD", CARD, _card_ok),
    PiiKind("PHONE", PHONE, _phone_ok),
)


def find_pii(text: str) -> list[str]:
    """Kinds of PII present in text (validated matches only)."""
    found = []
    for kind in PII_KINDS:
        if any(kind.valid(m.group(0)) for m in kind.pattern.finditer(text)):
            found.append(kind.name)
    return found


def redact_pii(text: str) -> str:
    for kind in PII_KINDS:
        text = kind.pattern.sub(_redactor(kind), text)
    return text


def _redactor(kind: PiiKind) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        return f"[REDACTED_{kind.name}]" if kind.valid(found) else found

    return replace


class GuardrailViolation(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


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
        terms = [t.strip() for t in settings.deny_terms if t.strip()]
        self.deny = (
            re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)
            if terms
            else None
        )
        self.moderator = load_moderator(settings.moderation, settings)

    @property
    def inspects_input(self) -> bool:
        return self.pii_input != "off" or self.deny is not None or self.moderator is not None

    async def check_input(self, texts: Iterable[str]) -> None:
        """Raise GuardrailViolation for blocked input (redaction happens separately)."""
        joined = "\n".join(texts)
        if self.deny is not None and self.deny.search(joined):
            raise GuardrailViolation("The request contains a denied term.", "content_denied")
        if self.pii_input == "block":
            kinds = find_pii(joined)
            if kinds:
                raise GuardrailViolation(
                    f"The request contains personal data ({', '.join(kinds)}).", "pii_detected"
                )
        if self.moderator is not None:
            reason = await self.moderator.check(joined)
            if reason:
                raise GuardrailViolation(f"The request was refused: {reason}", "moderation")

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
            for match in kind.pattern.finditer(self.pending):
                if match.start() < split < match.end():
                    split = match.start()
        released, self.pending = self.pending[:split], self.pending[split:]
        return self.guardrails.filter_output(released)

    def flush(self) -> str:
        released, self.pending = self.pending, ""
        return self.guardrails.filter_output(released)
