"""The suites and datasets shipped with the project load, validate and build."""

from __future__ import annotations

import re

import pytest

from evals.datasets import DatasetError, load_dataset
from evals.judge_calibration import load_human_labels
from evals.scorers import build_scorer
from evals.settings import EvalsSettings
from evals.suites import available_suites, load_suite

SETTINGS = EvalsSettings()
SHIPPED = available_suites(SETTINGS.suites_dir)


def test_the_project_suites_are_shipped():
    assert {"smoke", "classification", "extraction", "refusal"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_suite_loads_and_its_scorers_build(name):
    suite = load_suite(name, SETTINGS.suites_dir)
    assert suite.name == name
    for spec in suite.scorers:
        build_scorer(spec)
    dataset = SETTINGS.datasets_dir / suite.dataset
    if not dataset.exists():
        # Only an optional suite may lack its dataset (a bake with the feature disabled);
        # the runner then reports it as skipped.
        assert suite.optional, f"{suite.dataset} is missing"
        return
    samples = load_dataset(dataset)
    assert len(samples) <= 25, "keep suites small enough for a CPU smoke run"
    for sample in samples:
        assert sample.metadata.get("category"), f"{sample.id} has no category"
    if suite.task == "classification":
        assert all(s.label in (s.choices or []) for s in samples)
        assert len({s.label for s in samples}) >= 3
    if suite.judge_calibration:
        labels = load_human_labels(suite.judge_calibration.human_labels, SETTINGS)
        assert {row.human for row in labels} == {"pass", "fail"}


def test_rag_suite_is_optional_so_a_bake_without_rag_skips_it():
    if "rag" not in SHIPPED:
        return  # removed together with its dataset (enable_rag=no)
    suite = load_suite("rag", SETTINGS.suites_dir)
    assert suite.optional and suite.endpoint == "rag"


def test_data_files_survive_cookiecutter_rendering():
    # Suites and datasets are rendered by Jinja when the project is baked.
    for path in [*SETTINGS.suites_dir.glob("*.yaml"), *SETTINGS.datasets_dir.glob("*.jsonl")]:
        assert not re.search(r"[{]([{]|%|#)", path.read_text()), path


def test_bad_dataset_rows_are_reported_with_their_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "input": "x"}\n{"id": "a", "input": "y"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: duplicate id 'a'"):
        load_dataset(path)
    path.write_text('{"id": "a"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: invalid sample"):
        load_dataset(path)


def test_codeword_suite_is_the_finetune_jobs_held_out_set():
    """The adapter walkthrough (docs/adapters.md) gates the sample adapter on the same
    held-out questions the finetune job's end-to-end test asks."""
    from finetune.settings import SAMPLE_DATASETS_DIR

    shipped = SETTINGS.datasets_dir / load_suite("codeword", SETTINGS.suites_dir).dataset
    assert shipped.read_text() == (SAMPLE_DATASETS_DIR / "codeword-eval.jsonl").read_text()
