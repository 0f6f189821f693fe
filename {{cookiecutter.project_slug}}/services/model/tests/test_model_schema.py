"""Property-based API testing with schemathesis against a real model-service process
on the tiny model, default settings: whatever it is sent (schema-conforming or not), it
never answers 500 or hangs, every error is in OpenAI's shape, the process does not grow,
and it still answers a normal request afterwards.

The schema types the contract's richer fields loosely (`tools`, `response_format`,
`structured_outputs` are objects of anything), so schemathesis alone rarely builds one
the engine acts on. Positive cases therefore also draw those fields from the strategies
below: JSON schemas (valid, unsatisfiable, huge bounds, bad patterns), tools and every
`tool_choice`, conversations with tool calls and tool results, logit_bias, n, logprobs,
penalties, echo, embeddings `dimensions` and `encoding_format`, each mixed with junk."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.models import ModelServer

BODY_OPERATIONS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
# Per operation and pass (schemathesis positive, contract fields, negative): at most
# 3 x (20 + 20 + 20) + 3 x 2 x 2 = 192 calls; the bound is 200.
EXAMPLES = {"POST": 20, "GET": 2}
RSS_GROWTH_BOUND = 256 * 2**20


# -- the contract's fields, structured and hostile -------------------------------------

names = st.text(max_size=10)
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | names
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=6,
)
bounds = st.integers(-1, 4) | st.just(10**9)
leaf_schemas = st.one_of(
    st.fixed_dictionaries({"type": st.just("string")}, optional={"maxLength": bounds}),
    st.fixed_dictionaries(
        {"type": st.just("string"), "pattern": st.sampled_from(["^[a-z]{1,4}$", "(", "(a|aa)*b"])}
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["integer", "number"])},
        optional={"minimum": numbers, "maximum": numbers, "multipleOf": numbers},
    ),
    st.fixed_dictionaries({"enum": st.lists(scalars, max_size=3)}),
    st.sampled_from([{"type": "boolean"}, {"$ref": "#/nope"}, {"type": "nope"}, True, {}]),
    junk,
)
json_schemas = st.recursive(
    leaf_schemas,
    lambda inner: st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": inner},
            optional={"minItems": bounds, "maxItems": bounds},
        ),
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(names, inner, max_size=3)},
            optional={"required": st.lists(names, max_size=2)},
        ),
    ),
    max_leaves=5,
)
response_formats = st.one_of(
    st.sampled_from([{"type": "json_object"}, {"type": "text"}, {"type": "nope"}]),
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries(
                {"name": names, "schema": json_schemas, "strict": st.booleans()}
            ),
        }
    ),
    junk,
)
structured_outputs = st.fixed_dictionaries(
    {},
    optional={
        "json": json_schemas | names,
        "regex": st.sampled_from(["[a-c]{1,5}", "(", "a{1000000000}"]) | names,
        "choice": st.lists(names, max_size=3) | junk,
        "json_object": st.booleans(),
        "grammar": names,
    },
)
functions = st.fixed_dictionaries(
    {"name": st.sampled_from(["get_weather", "lookup"]) | names},
    optional={"parameters": json_schemas, "description": names},
)
tool_lists = st.lists(
    st.fixed_dictionaries({"type": st.just("function"), "function": functions}),
    min_size=1,
    max_size=3,
)
tool_choices = (
    st.sampled_from(["none", "auto", "required"])
    | junk
    | st.fixed_dictionaries(
        {"type": st.just("function"), "function": st.fixed_dictionaries({"name": names})}
    )
)
tool_calls = st.fixed_dictionaries(
    {
        "id": names,
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": names, "arguments": names | junk}),
    }
)
conversations = st.lists(
    st.one_of(
        st.fixed_dictionaries({"role": st.just("user"), "content": names}),
        st.fixed_dictionaries(
            {"role": st.just("assistant"), "content": st.none() | names},
            optional={"tool_calls": st.lists(tool_calls | junk, max_size=2) | junk},
        ),
        st.fixed_dictionaries(
            {"role": st.just("tool"), "content": names},
            optional={"tool_call_id": names | junk, "name": names | junk},
        ),
    ),
    min_size=1,
    max_size=4,
)
logit_biases = st.dictionaries(
    st.integers(-5, 2**40).map(str) | names, st.floats(-200, 200), max_size=3
)


def some_of(groups: dict[str, st.SearchStrategy[dict[str, Any]]]) -> st.SearchStrategy[Any]:
    """One to three groups of fields (name, body fields): few enough that one bad field
    does not hide the others behind its 400."""
    chosen = st.lists(st.sampled_from(sorted(groups)), min_size=1, max_size=3, unique=True)
    return chosen.flatmap(
        lambda keys: st.tuples(*(groups[k].map(lambda v, k=k: (k, v)) for k in keys))
    )


def one(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: values})


SAMPLING_GROUPS = {
    "response_format": one("response_format", response_formats),
    "structured_outputs": one("structured_outputs", structured_outputs),
    "logit_bias": one("logit_bias", logit_biases),
    "n": one("n", st.integers(1, 16)),
    "penalties": st.fixed_dictionaries(
        {},
        optional={
            "presence_penalty": st.floats(-2, 2),
            "frequency_penalty": st.floats(-2, 2),
            "repetition_penalty": st.floats(0.01, 10),
        },
    ),
}
CONTRACT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "/v1/chat/completions": some_of({
        **SAMPLING_GROUPS,
        "messages": one("messages", conversations),
        "tools": st.fixed_dictionaries(
            {"tools": tool_lists},
            optional={"tool_choice": tool_choices, "parallel_tool_calls": st.booleans()},
        ),
        "tool_choice": one("tool_choice", tool_choices),
        "logprobs": st.fixed_dictionaries(
            {"logprobs": st.booleans()}, optional={"top_logprobs": st.integers(-1, 25)}
        ),
    }),
    "/v1/completions": some_of({
        **SAMPLING_GROUPS,
        "prompt": one("prompt", names | st.lists(st.integers(-2, 400), max_size=4)),
        "echo": one("echo", st.booleans()),
        "logprobs": one("logprobs", st.integers(-1, 25)),
    }),
    "/v1/embeddings": some_of({
        "dimensions": one("dimensions", st.integers(-1, 40)),  # the tiny model has 32
        "encoding_format": one("encoding_format", st.sampled_from(["float", "base64", "nope"])),
    }),
}  # fmt: skip


VALID_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
    "/v1/completions": {"prompt": "Hello", "max_tokens": 8},
    "/v1/embeddings": {"input": "Hello"},
}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


def start_server(name: str, model_dir: Path, log_dir: Path, task: str, context: int) -> ModelServer:
    env = {
        "MODEL_SERVED_NAME": "tiny",
        "MODEL_KV_CACHE_GIB": "0.01",
        "MODEL_MAX_MODEL_LEN": str(context),
    }
    return ModelServer(name, log_dir, model_dir.parent, str(model_dir), task, env=env).start()


@pytest.fixture(scope="module")
def fuzzed_servers(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelServer]]:
    """`generate` takes schemathesis' own cases: a short context, so a case that leaves
    out max_tokens (n up to 16 sequences to the end of the context) stays quick on a
    loaded host. `contract` takes the contract pass: room for prompts with tools (the
    tiny tokenizer spends a token on every few bytes; a tool prompt is about 400
    tokens), and its requests ask for 8 tokens. `embed` takes every embeddings case."""
    logs = tmp_path_factory.mktemp("fuzzed")
    started: dict[str, ModelServer] = {}
    try:
        for name, task, context in (
            ("generate", "generate", 128),
            ("contract", "generate", 1024),
            ("embed", "embed", 128),
        ):
            started[name] = start_server(f"fuzzed-{name}", tiny_model_dir, logs, task, context)
        yield started
    finally:
        for server in started.values():
            server.stop()


def normal_request(base_url: str) -> httpx.Response:
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    return httpx.post(f"{base_url}/v1/completions", json=body, timeout=60)


def assert_answered_well(response: Any, case: Any) -> None:
    assert response.status_code != 500, (case.method, case.path, case.body, response.text)
    assert '"code": 500' not in response.text, (case.path, case.body, response.text)  # streams
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]


def fuzz(
    servers: dict[str, ModelServer],
    mode: GenerationMode,
    calls: Counter[str],
    groups: Counter[str],
    contract: bool = False,
) -> None:
    """One pass over every operation: schemathesis' own cases, or (`contract`) a valid
    request carrying some of the contract's fields, drawn from CONTRACT_FIELDS."""
    schema = schemathesis.openapi.from_url(f"{servers['generate'].base_url}/openapi.json")
    which = "contract" if contract else "generate"
    for result in schema.get_all_operations():
        operation = result.ok()
        if contract and operation.path not in CONTRACT_FIELDS:
            continue
        drawing = CONTRACT_FIELDS[operation.path] if contract else st.just(())

        @given(case=operation.as_strategy(generation_mode=mode), drawn=drawing)
        @settings(
            max_examples=EXAMPLES[operation.method.upper()],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any, drawn: tuple[tuple[str, dict[str, Any]], ...]) -> None:
            if drawn:
                case.body = dict(VALID_BODIES[case.path])
                for _, fields in drawn:
                    case.body.update(fields)
            if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
                case.body["model"] = "tiny"  # reach past the model check into the engine
            server = servers["embed" if case.path == "/v1/embeddings" else which]
            response = case.call(base_url=server.base_url, timeout=60)  # a hang fails here
            calls[case.path] += 1
            groups.update(f"{case.path} {name} {response.status_code}" for name, _ in drawn)
            assert_answered_well(response, case)

        try:
            check()
        except Unsatisfiable:
            # Negative mode cannot break a request that has nothing to break (GET /health).
            assert mode is GenerationMode.NEGATIVE


def test_no_server_errors_no_hang_no_growth(fuzzed_servers: dict[str, ModelServer]) -> None:
    servers = fuzzed_servers
    for name in ("generate", "contract"):  # warm before measuring
        assert normal_request(servers[name].base_url).status_code == 200
    before = {name: rss_bytes(server.pid) for name, server in servers.items()}
    calls: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    fuzz(servers, GenerationMode.POSITIVE, calls, groups)
    fuzz(servers, GenerationMode.POSITIVE, calls, groups, contract=True)
    fuzz(servers, GenerationMode.NEGATIVE, calls, groups)
    print(sorted(groups.items()))  # which contract fields were answered how (-s shows it)
    assert set(calls) >= BODY_OPERATIONS, calls
    assert sum(calls.values()) <= 200, calls
    served = {key.split()[1] for key in groups if key.endswith(" 200")}
    # The new fields reached the engine, not only the validation.
    assert served >= {"tools", "response_format", "echo", "n", "dimensions"}, groups
    for name, server in servers.items():
        growth = rss_bytes(server.pid) - before[name]
        assert growth < RSS_GROWTH_BOUND, f"{name}: RSS grew by {growth / 2**20:.0f} MiB"
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
    for name in ("generate", "contract"):
        after = normal_request(servers[name].base_url)
        assert after.status_code == 200, after.text
        assert after.json()["usage"]["completion_tokens"] == 4
    embedded = httpx.post(
        f"{servers['embed'].base_url}/v1/embeddings", json={"input": "hi"}, timeout=60
    )
    assert embedded.status_code == 200, embedded.text
