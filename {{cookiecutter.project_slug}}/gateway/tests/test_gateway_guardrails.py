"""Guardrails: PII detection/redaction rules, and the policies through a real gateway."""

from __future__ import annotations

import sys
import textwrap

import httpx
import pytest

from gateway.guardrails import (
    Guardrails,
    GuardrailViolation,
    Moderator,
    OutputStreamFilter,
    find_pii,
    iban_valid,
    luhn_valid,
    redact_pii,
)
from gateway.settings import Settings
from tests.support.gateway import (
    MOCK_EMBEDDER,
    MOCK_LLM,
    GatewayProcess,
    gateway_launcher,
    upstreams_env,
)

VALID_CARD = "4111 1111 1111 1111"
INVALID_CARD = "4111 1111 1111 1112"
VALID_IBAN = "DE89 3704 0044 0532 0130 00"
INVALID_IBAN = "DE89 3704 0044 0532 0130 01"


def test_luhn_and_iban_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid(VALID_IBAN)
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid(INVALID_IBAN)


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("mail me at jane.doe@example.org", ["EMAIL"]),
        (f"card {VALID_CARD} please", ["CARD"]),
        (f"card {INVALID_CARD} is not a card", []),
        (f"pay to {VALID_IBAN}", ["IBAN"]),
        (f"pay to {INVALID_IBAN}", []),
        ("call +44 20 7946 0958 today", ["PHONE"]),
        ("the year 2024 had 365 days", []),
    ],
)
def test_find_pii(text: str, kinds: list[str]) -> None:
    assert find_pii(text) == kinds


def test_redaction_replaces_only_validated_matches() -> None:
    text = f"jane@example.org paid with {VALID_CARD}, not {INVALID_CARD}"
    assert redact_pii(text) == (f"[REDACTED_EMAIL] paid with [REDACTED_CARD], not {INVALID_CARD}")


@pytest.mark.parametrize("mode", ["redact", "block"])
def test_stream_filter_sees_entities_split_across_chunks(mode: str) -> None:
    guardrails = Guardrails(Settings(pii_output=mode))
    stream_filter = OutputStreamFilter(guardrails)
    pieces = [
        "Write to ja",
        "ne.doe@exa",
        "mple",
        ".org or pay ",
        "4111 1111 ",
        "1111 1111",
        " today.",
    ]
    if mode == "block":
        with pytest.raises(GuardrailViolation):
            for piece in pieces:
                stream_filter.feed(piece)
            stream_filter.flush()
        return
    released = "".join(stream_filter.feed(p) for p in pieces) + stream_filter.flush()
    assert released == "Write to [REDACTED_EMAIL] or pay [REDACTED_CARD] today."


async def test_pluggable_moderator(tmp_path, monkeypatch) -> None:
    module = tmp_path / "my_moderation.py"
    module.write_text(
        textwrap.dedent(
            """
            class Refuser:
                async def check(self, text):
                    return "mentions dragons" if "dragon" in text else None

            def create(settings):
                return Refuser()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    guardrails = Guardrails(Settings(moderation="my_moderation:create"))
    assert isinstance(guardrails.moderator, Moderator)
    await guardrails.check_input(["a quiet village"])
    with pytest.raises(Exception, match="mentions dragons"):
        await guardrails.check_input(["a dragon appears"])
    sys.modules.pop("my_moderation", None)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, redis_server, mock_upstream):
    """Two gateways: input PII blocked + output redacted; input PII redacted."""
    make, started = gateway_launcher(tmp_path_factory.mktemp("guarded"))
    env = {
        "GATEWAY_UPSTREAMS": upstreams_env(
            ("mock", mock_upstream.base_url, [MOCK_LLM, MOCK_EMBEDDER])
        ),
        "GATEWAY_DENY_TERMS": '["forbidden phrase"]',
        "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_MAX_PROMPT_CHARS": "2000",
    }
    try:
        blocking, redacting = make(
            redis_server.url,
            {**env, "GATEWAY_PII_INPUT": "redact", "GATEWAY_PII_OUTPUT": "block"},
            GATEWAY_PII_INPUT="block",
            GATEWAY_PII_OUTPUT="redact",
            **env,
        )
        yield blocking, redacting
    finally:
        for process in started:
            process.stop()


def _chat(gateway: GatewayProcess, content: str, **extra):
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers=gateway.headers,
        json={"model": MOCK_LLM, "messages": [{"role": "user", "content": content}], **extra},
    )


def test_input_pii_block(guarded) -> None:
    blocking, _ = guarded
    refused = _chat(blocking, f"my card is {VALID_CARD}")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "pii_detected"
    assert VALID_CARD not in refused.text
    assert _chat(blocking, f"not a card: {INVALID_CARD}").status_code == 200


def test_input_pii_redact_reaches_upstream_redacted(guarded, mock_upstream) -> None:
    _, redacting = guarded
    assert _chat(redacting, "write to jane@example.org").status_code == 200
    sent = mock_upstream.last_request()["messages"][0]["content"]
    assert sent == "write to [REDACTED_EMAIL]"


def test_output_pii_redact_and_block(guarded) -> None:
    blocking, redacting = guarded
    redacted = _chat(blocking, "ECHO: reach me at jane(at)example.org soon")
    assert redacted.status_code == 200
    assert redacted.json()["choices"][0]["message"]["content"] == (
        "reach me at [REDACTED_EMAIL] soon"
    )
    blocked = _chat(redacting, "ECHO: reach me at jane(at)example.org soon")
    assert blocked.status_code == 502
    assert blocked.json()["error"]["code"] == "pii_in_output"


def test_output_pii_redact_in_streams(guarded) -> None:
    blocking, _ = guarded
    with httpx.stream(
        "POST",
        f"{blocking.base_url}/v1/chat/completions",
        headers=blocking.headers,
        json={
            "model": MOCK_LLM,
            "messages": [{"role": "user", "content": "ECHO: mail jane(at)example.org now"}],
            "stream": True,
        },
    ) as response:
        body = response.read().decode()
    assert "jane@example.org" not in body
    assert "[REDACTED_EMAIL]" in body


def test_deny_list_and_prompt_length(guarded) -> None:
    blocking, _ = guarded
    denied = _chat(blocking, "please say the Forbidden Phrase")
    assert denied.status_code == 400
    assert denied.json()["error"]["code"] == "content_denied"
    too_long = _chat(blocking, "x" * 2001)
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "prompt_too_long"
