"""The baked projects' own end-to-end suites, on real models and a real Redis.

- The default bake runs its end-to-end and vLLM cross-backend tests (its fast tests
  run in test_bakes.py, so together the default bake runs its whole suite).
- One bake per other serving backend runs the end-to-end tests with its backend as
  the default the project was generated for.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import Bakery, baked_test_env, python_tool, run

pytestmark = pytest.mark.slow


def _passed(stdout: str) -> int:
    match = re.search(r"(\d+) passed", stdout)
    return int(match.group(1)) if match else 0


def test_default_bake_end_to_end(bakery: Bakery) -> None:
    project = bakery.bake({})
    proc = run(
        python_tool("pytest", "-q", "-p", "no:cacheprovider", "-m", "(e2e or vllm) and not bench"),
        project,
        env=baked_test_env(),
    )
    assert _passed(proc.stdout) > 0, proc.stdout[-2000:]


@pytest.mark.parametrize("backend", ["vllm", "transformers"])
def test_backend_bake_end_to_end(bakery: Bakery, backend: str) -> None:
    project = bakery.bake({"serving_backend": backend})
    env = {**baked_test_env(), "MODEL_BACKEND": backend}
    proc = run(
        python_tool(
            "pytest", "-q", "-p", "no:cacheprovider", "-m", "e2e and not vllm",
            "services/model/tests", "gateway/tests",
        ),
        project,
        env=env,
    )  # fmt: skip
    assert _passed(proc.stdout) > 0, proc.stdout[-2000:]
