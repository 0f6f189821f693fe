"""Guardrails: PII detection/redaction rules, and the policies through a real gateway."""

from __future__ import annotations

import sys
import textwrap
import threading

import httpx
import pytest

from gateway.guardrails import (
    PII_KINDS,
    DenyList,
    Guardrails,
    GuardrailViolation,
    Moderator,
    OutputStreamFilter,
    candidates,
    find_pii,
    iban_valid,
    luhn_valid,
    redact_pii,
)
from gateway.settings import Settings
from gateway.textnorm import pii_view, term_view
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
FULLWIDTH_SECRET = "\uff53\uff45\uff43\uff52\uff45\uff54"  # "secret" in full-width letters
# The spellings of the term `secret project` that a naive match misses.
HIDDEN_TERM_SPELLINGS = [
    "secret\u200bproject",
    f"{FULLWIDTH_SECRET} project",
    "secret  project",
    "SECRET pro\u00adject",
]


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


@pytest.mark.parametrize("spelling", HIDDEN_TERM_SPELLINGS)
def test_term_view_reads_hidden_spellings_as_the_term(spelling: str) -> None:
    assert term_view(f"about the {spelling}!") == "about the secret project!"
    assert DenyList(["Secret Project"]).found_in(f"tell me about the {spelling}")


@pytest.mark.parametrize(
    ("text", "denied"),
    [
        ("I write C++ every day", True),
        ("I write c++17 every day", True),  # a term ending in a symbol is free on that side
        ("abc++ is another language", False),  # ...but bounded where it begins with a letter
        ("the secret projects", False),
        ("a secretproject", False),
        ("asp.net core", True),
    ],
)
def test_deny_terms_are_bounded_only_on_word_character_sides(text: str, denied: bool) -> None:
    assert DenyList(["c++", "secret project", ".NET"]).found_in(text) is denied


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail jane@exa\u200bmple.org", "EMAIL"),  # zero-width space inside the address
        ("card \uff14\uff11\uff11\uff11 1111 1111 1111", "CARD"),  # full-width digits
        ("card \u0664\u0661\u0661\u0661 1111 1111 1111", "CARD"),  # Arabic-Indic digits
        ("card 4111  1111  1111  1111", "CARD"),  # double spaces
        ("card4111111111111111x", "CARD"),  # glued to letters
    ],
)
def test_pii_hidden_by_invisible_or_look_alike_characters(text: str, kind: str) -> None:
    assert find_pii(text) == [kind]
    redacted = redact_pii(text)
    assert f"[REDACTED_{kind}]" in redacted
    assert find_pii(redacted) == []


def test_pii_view_keeps_lines_and_case() -> None:
    assert pii_view("DE89\u00a0 3704\tx\nnext") == "DE89 3704 x\nnext"


@pytest.mark.parametrize(
    "hostile",
    [
        "a." * 99_000,  # the case: quadratic for the old e-mail pattern
        ("1" * 20 + "x ") * 9_000,  # many phone/card candidates that all fail
        ("a@" + "a." * 120 + "1") * 800,
        "x@" * 99_000,
    ],
)
def test_every_pattern_scans_hostile_input_completely(hostile: str) -> None:
    # RE2 scans in linear time; the assertions check the scan ran to the end and found
    # nothing where nothing is (the gateway test below checks the event loop).
    for kind in PII_KINDS:
        assert [s for s, e in candidates(kind, hostile) if kind.valid(hostile[s:e])] == []
    assert find_pii(hostile + " jane@example.org") == ["EMAIL"]


async def test_long_scans_run_in_a_worker_thread() -> None:
    guardrails = Guardrails(Settings(guardrail_thread_chars=1000))
    loop_thread = threading.get_ident()
    assert await guardrails.in_thread_if_long(1000, threading.get_ident) == loop_thread
    assert await guardrails.in_thread_if_long(1001, threading.get_ident) != loop_thread


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


LONG_PROMPT_LIMIT = 250_000


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, redis_server, mock_upstream):
    """Two gateways: input PII blocked + output redacted; input PII redacted."""
    make, started = gateway_launcher(tmp_path_factory.mktemp("guarded"))
    env = {
        "GATEWAY_UPSTREAMS": upstreams_env(
            ("mock", mock_upstream.base_url, [MOCK_LLM, MOCK_EMBEDDER])
        ),
        "GATEWAY_DENY_TERMS": '["forbidden phrase", "secret project", "c++"]',
        "GATEWAY_CACHE_ENABLED": "false",
        "GATEWAY_MAX_PROMPT_CHARS": str(LONG_PROMPT_LIMIT),
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


def _chat(gateway: GatewayProcess, content: str, timeout: float = 30.0, **extra):
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        headers=gateway.headers,
        json={"model": MOCK_LLM, "messages": [{"role": "user", "content": content}], **extra},
        timeout=timeout,
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
    too_long = _chat(blocking, "x" * (LONG_PROMPT_LIMIT + 1))
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "prompt_too_long"


def _post(gateway: GatewayProcess, path: str, body: dict, timeout: float = 30.0):
    return httpx.post(
        f"{gateway.base_url}/v1/{path}", headers=gateway.headers, json=body, timeout=timeout
    )


def _assert_error(response: httpx.Response, status: int, code: str, param: str | None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)


def _assert_still_serving(gateway: GatewayProcess) -> None:
    after = _chat(gateway, "a normal question")
    assert after.status_code == 200
    assert after.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "text", "text": ["forbidden phrase"]},
        {"type": "text", "text": {"nested": "forbidden phrase"}},
        {"type": "text"},
        {"type": "refusal", "refusal": 7},
        {"type": "image_url", "image_url": {"url": "x"}, "text": ["forbidden phrase"]},
        "forbidden phrase",
        {"text": "no type"},
    ],
)
def test_content_parts_are_validated_strictly(guarded, part) -> None:
    blocking, _ = guarded
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]
    response = _post(blocking, "chat/completions", {"model": MOCK_LLM, "messages": messages})
    _assert_error(response, 400, "invalid_request", "messages.0.content")
    assert "content part 1" in response.json()["error"]["message"]
    _assert_still_serving(blocking)


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": "hello"}, {"type": "text", "text": "the forbidden phrase"}],
        [{"type": "input_text", "text": "the forbidden phrase"}],
        [{"type": "refusal", "refusal": "the forbidden phrase"}],
    ],
)
def test_guardrails_read_every_text_part(guarded, content) -> None:
    blocking, _ = guarded
    messages = [{"role": "assistant", "content": content}, {"role": "user", "content": "go on"}]
    response = _post(blocking, "chat/completions", {"model": MOCK_LLM, "messages": messages})
    _assert_error(response, 400, "content_denied", None)
    _assert_still_serving(blocking)


def test_redaction_reaches_text_parts(guarded, mock_upstream) -> None:
    _, redacting = guarded
    content = [{"type": "text", "text": "write to jane@exa\u200bmple.org"}]
    body = {"model": MOCK_LLM, "messages": [{"role": "user", "content": content}]}
    assert _post(redacting, "chat/completions", body).status_code == 200
    sent = mock_upstream.last_request()["messages"][0]["content"]
    assert sent == [{"type": "text", "text": "write to [REDACTED_EMAIL]"}]


def _tool(description: str, parameter_description: str = "a city") -> dict:
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string", "description": parameter_description}},
    }
    function = {"name": "lookup", "description": description, "parameters": parameters}
    return {"type": "function", "function": function}


def _tool_call(arguments: str) -> dict:
    function = {"name": "lookup", "arguments": arguments}
    return {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "type": "function", "function": function}],
    }


@pytest.mark.parametrize(
    "body",
    [
        {"tools": [_tool("Tells about the forbidden phrase")]},
        {"tools": [_tool("Looks a city up", "the Secret\u200bProject site")]},
        {"messages": [{"role": "user", "content": "go"}, _tool_call('{"q": "forbidden phrase"}')]},
    ],
    ids=["tool-description", "parameter-description", "tool-call-arguments"],
)
def test_guardrails_read_tools_and_tool_call_arguments(guarded, body) -> None:
    blocking, _ = guarded
    request = {"model": MOCK_LLM, "messages": [{"role": "user", "content": "hi"}], **body}
    _assert_error(_post(blocking, "chat/completions", request), 400, "content_denied", None)
    _assert_still_serving(blocking)


def test_pii_in_tools_and_tool_calls_is_blocked_or_redacted(guarded, mock_upstream) -> None:
    blocking, redacting = guarded
    messages = [{"role": "user", "content": "go"}, _tool_call('{"to": "jane@example.org"}')]
    tools = [_tool("Mails jane@example.org")]
    body = {"model": MOCK_LLM, "messages": messages, "tools": tools}
    _assert_error(_post(blocking, "chat/completions", body), 400, "pii_detected", None)
    assert _post(redacting, "chat/completions", body).status_code == 200
    sent = mock_upstream.last_request()
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == (
        '{"to": "[REDACTED_EMAIL]"}'
    )
    assert sent["tools"][0]["function"]["description"] == "Mails [REDACTED_EMAIL]"
    assert sent["tools"][0]["function"]["parameters"] == tools[0]["function"]["parameters"]
    _assert_still_serving(blocking)


def test_guardrails_read_the_completion_suffix(guarded, mock_upstream) -> None:
    blocking, redacting = guarded
    body = {"model": MOCK_LLM, "prompt": "def f():", "suffix": "# the forbidden phrase"}
    _assert_error(_post(blocking, "completions", body), 400, "content_denied", None)
    mailed = {**body, "suffix": "# mail jane@example.org"}
    assert _post(redacting, "completions", mailed).status_code == 200
    assert mock_upstream.last_request()["suffix"] == "# mail [REDACTED_EMAIL]"
    _assert_still_serving(blocking)


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("completions", "prompt", [9, 99, 999999999]),
        ("completions", "prompt", [[1, 2], [3]]),
        ("embeddings", "input", [17, 23]),
    ],
)
def test_token_id_prompts_are_refused_while_a_text_guardrail_is_on(
    guarded, mock_gateway, path: str, field: str, value: list
) -> None:
    blocking, _ = guarded
    model = MOCK_EMBEDDER if path == "embeddings" else MOCK_LLM
    refused = _post(blocking, path, {"model": model, field: value})
    _assert_error(refused, 400, "unreadable_prompt", field)
    message = refused.json()["error"]["message"]
    assert "GATEWAY_PII_INPUT=block" in message and "GATEWAY_DENY_TERMS" in message
    _assert_still_serving(blocking)
    # Without a text guardrail token ids pass through as before.
    unguarded = httpx.post(
        f"{mock_gateway.base_url}/v1/{path}",
        headers=mock_gateway.headers,
        json={"model": model, field: value, "temperature": 0.5},
    )
    assert unguarded.status_code == 200, unguarded.text


@pytest.mark.parametrize("spelling", [*HIDDEN_TERM_SPELLINGS, "in C++ please"])
def test_deny_list_sees_through_hidden_spellings(guarded, spelling: str) -> None:
    blocking, _ = guarded
    _assert_error(_chat(blocking, f"tell me about {spelling}"), 400, "content_denied", None)
    _assert_still_serving(blocking)


@pytest.mark.parametrize(
    "hidden",
    ["jane@exa\u200bmple.org", "\uff14\uff11\uff11\uff11 1111 1111 1111", "4111  1111  1111  1111"],
)
def test_pii_block_sees_through_hidden_spellings(guarded, hidden: str) -> None:
    blocking, _ = guarded
    _assert_error(_chat(blocking, f"my details: {hidden}"), 400, "pii_detected", None)
    _assert_still_serving(blocking)


def test_a_huge_hostile_prompt_does_not_stall_the_event_loop(guarded) -> None:
    """The issue's case: with PII checks on, 198k characters of "a." stalled the event
    loop for about a minute (a quadratic e-mail pattern). Two such requests run while
    `/healthz` is asked; it must answer (within a generous deadline), and each request
    gets its documented answer: 200, nothing in it is PII."""
    blocking, redacting = guarded
    hostile = "a." * 99_000
    results: dict[str, httpx.Response] = {}

    def send(name: str, gateway: GatewayProcess) -> None:
        results[name] = _chat(gateway, hostile, timeout=120.0)

    senders = [
        threading.Thread(target=send, args=("block", blocking)),
        threading.Thread(target=send, args=("redact", redacting)),
    ]
    for sender in senders:
        sender.start()
    threading.Event().wait(0.3)  # let both bodies arrive before asking
    health = [httpx.get(f"{g.base_url}/healthz", timeout=20.0) for g in (blocking, redacting)]
    for sender in senders:
        sender.join(timeout=120)
    assert [h.status_code for h in health] == [200, 200]
    assert {name: r.status_code for name, r in results.items()} == {"block": 200, "redact": 200}
    _assert_still_serving(blocking)
    _assert_still_serving(redacting)
