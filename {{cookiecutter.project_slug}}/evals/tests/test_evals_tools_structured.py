"""The tools suite and structured outputs of the extraction suite, run through the CLI
on the shipped suites and datasets against a scripted upstream (real HTTP) whose
answers are right or wrong by design."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evals.cli import app
from evals.datasets import load_dataset
from evals.settings import EvalsSettings

DATASETS = EvalsSettings().datasets_dir
TOOLS = load_dataset(DATASETS / "tools.jsonl")
PEOPLE = load_dataset(DATASETS / "extraction.jsonl")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("EVALS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EVALS_MODEL", "scripted")
    return tmp_path


def run(workspace: Path, monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> dict:
    monkeypatch.setenv("EVALS_BASE_URL", url)
    result = CliRunner().invoke(app, ["run", "--run-id", "r", *args])
    data: dict[str, Any] = json.loads((workspace / "reports/r/report.json").read_text())
    data["exit"] = result.exit_code
    data["output"] = result.output
    return data


def scores(report: dict, suite: int = 0) -> dict[str, dict[str, float | None]]:
    return {s["id"]: s["scores"] for s in report["suites"][suite]["samples"]}


def means(report: dict, suite: int = 0) -> dict[str, float]:
    metrics = report["suites"][suite]["metrics"]
    return {name: m["summary"]["mean"] for name, m in metrics.items()}


def right_tool_replies() -> list[dict[str, Any]]:
    replies = []
    for sample in TOOLS:
        assert isinstance(sample.target, dict)
        if sample.target["name"] is None:
            replies.append({"match": sample.input, "content": "Hello, I am fine."})
        else:
            call = {"name": sample.target["name"], "arguments": sample.target["arguments"]}
            replies.append({"match": sample.input, "tool_calls": [call]})
    return replies


def test_right_tool_calls_score_one_and_the_tools_are_sent(
    workspace, scripted_upstream, monkeypatch
):
    upstream = scripted_upstream(replies=right_tool_replies())
    report = run(workspace, monkeypatch, upstream.v1, "--suite", "tools")
    assert report["exit"] == 0, report["output"]
    assert means(report) == {"tool_choice": 1.0, "arguments_valid": 1.0, "argument_accuracy": 1.0}
    metrics = report["suites"][0]["metrics"]
    # samples expecting a text answer have no arguments to judge
    assert metrics["arguments_valid"]["unscored"] == 4
    assert metrics["argument_accuracy"]["summary"]["n"] == 10
    body = upstream.stats()["bodies"][0]["body"]
    assert {t["function"]["name"] for t in body["tools"]} == {
        "get_weather",
        "convert_currency",
        "set_timer",
    }
    assert body["tool_choice"] == "auto"
    sample = next(s for s in report["suites"][0]["samples"] if s["id"] == "timer-10")
    assert sample["tool_calls"][0]["function"] == {
        "name": "set_timer",
        "arguments": '{"minutes": 10}',
    }


def test_wrong_names_invalid_and_wrong_arguments_score_as_computed_by_hand(
    workspace, scripted_upstream, monkeypatch
):
    def call(match: str, name: str, arguments: Any) -> dict[str, Any]:
        return {"match": match, "tool_calls": [{"name": name, "arguments": arguments}]}

    replies = [
        call("weather like in Paris", "get_weather", {"city": "paris"}),  # right (normalised)
        call("Tokyo in fahrenheit", "get_weather", {"city": "Tokyo", "unit": "celsius"}),
        call("Convert 100 USD", "get_weather", {"city": "USD"}),  # wrong tool
        call("Set a timer for 10", "set_timer", {"minutes": "ten"}),  # invalid type
        call("12 minute timer", "set_timer", '{"minutes": 12, "label": "pasta"'),  # not JSON
        call("60 minutes", "set_timer", {"minutes": 60, "sound": "bell"}),  # extra field
        call("capital of Italy", "get_weather", {"city": "Rome"}),  # call where text is right
        {"match": "", "content": "I cannot do that."},  # everything else: text, no call
    ]
    report = run(workspace, monkeypatch, scripted_upstream(replies=replies).v1, "--suite", "tools")
    per_sample = scores(report)
    assert per_sample["weather-paris"] == {
        "tool_choice": 1.0,
        "arguments_valid": 1.0,
        "argument_accuracy": 1.0,
    }
    assert per_sample["weather-tokyo-f"]["argument_accuracy"] == 0.5
    assert per_sample["fx-usd-eur"] == {
        "tool_choice": 0.0,
        "arguments_valid": 1.0,  # valid for the tool it did call
        "argument_accuracy": 0.0,
    }
    assert per_sample["timer-10"]["arguments_valid"] == 0.0
    assert per_sample["timer-pasta"]["arguments_valid"] == 0.0
    assert per_sample["timer-pasta"]["argument_accuracy"] == 0.0
    assert per_sample["timer-hour"]["arguments_valid"] == 0.0  # additionalProperties: false
    assert per_sample["timer-hour"]["argument_accuracy"] == 1.0
    assert per_sample["text-capital"]["tool_choice"] == 0.0
    assert per_sample["text-hello"]["tool_choice"] == 1.0
    assert per_sample["weather-rome"] == {
        "tool_choice": 0.0,
        "arguments_valid": 0.0,
        "argument_accuracy": 0.0,
    }
    # tool_choice: paris, tokyo, 3 timers, 3 of 4 text samples right = 8/14
    assert means(report) == pytest.approx(
        {"tool_choice": 8 / 14, "arguments_valid": 3 / 10, "argument_accuracy": 2.5 / 10}
    )


def person_replies(wrong_age: bool = False) -> list[dict[str, Any]]:
    replies = []
    for sample in PEOPLE:
        assert isinstance(sample.target, dict)
        target = dict(sample.target)
        if wrong_age and sample.id in ("e1", "e2"):
            target["age"] = "thirty"
        replies.append({"match": sample.input, "content": json.dumps(target)})
    return replies


def test_extraction_sends_json_schema_when_the_endpoint_takes_it(
    workspace, scripted_upstream, monkeypatch
):
    upstream = scripted_upstream(replies=person_replies(wrong_age=True))
    report = run(workspace, monkeypatch, upstream.v1, "--suite", "extraction")
    assert report["exit"] == 0, report["output"]
    assert means(report) == {"schema_valid": 0.75, "field_accuracy": pytest.approx(1 - 2 / 24)}
    assert report["suites"][0]["structured_output"].startswith("json_schema on 8/8 answered")
    bodies = [b["body"] for b in upstream.stats()["bodies"]]
    assert len(bodies) == 8
    response_format = bodies[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    assert response_format["json_schema"]["schema"]["required"] == ["name", "age", "city"]
    assert "json_schema on 8/8 answered" in (workspace / "reports/r/report.md").read_text()


def test_extraction_falls_back_to_the_prompt_when_the_endpoint_refuses_json_schema(
    workspace, scripted_upstream, monkeypatch
):
    upstream = scripted_upstream(replies=person_replies(), reject_fields=["response_format"])
    report = run(workspace, monkeypatch, upstream.v1, "--suite", "extraction")
    assert report["exit"] == 0, report["output"]
    assert means(report) == {"schema_valid": 1.0, "field_accuracy": 1.0}
    note = report["suites"][0]["structured_output"]
    assert "on 0/8 answered" in note and "refused it (400: Unsupported" in note
    bodies = [b["body"] for b in upstream.stats()["bodies"]]
    # one refused probe, then eight answered requests without response_format
    assert len(bodies) == 9
    assert ["response_format" in b for b in bodies] == [True] + [False] * 8


def test_required_structured_output_fails_the_run_on_an_endpoint_without_it(
    workspace, scripted_upstream, monkeypatch
):
    monkeypatch.setenv("EVALS_STRUCTURED_OUTPUT", "required")
    upstream = scripted_upstream(replies=person_replies(), reject_fields=["response_format"])
    report = run(workspace, monkeypatch, upstream.v1, "--suite", "extraction")
    assert report["exit"] == 2
    assert report["suites"][0]["n_errors"] == 8
    assert "Unsupported by the scripted backend" in report["suites"][0]["samples"][0]["error"]


def test_a_400_the_plain_request_gets_too_is_not_blamed_on_response_format(
    workspace, scripted_upstream, monkeypatch
):
    upstream = scripted_upstream(replies=person_replies(), reject_fields=["max_tokens"])
    report = run(workspace, monkeypatch, upstream.v1, "--suite", "extraction")
    assert report["exit"] == 2
    assert report["suites"][0]["n_errors"] == 8
    assert "refused" not in report["suites"][0]["structured_output"]
