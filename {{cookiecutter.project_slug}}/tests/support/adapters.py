"""LoRA adapters trained in the test session with the `finetune` package, shared by the
fine-tuning, model-service and gateway tests (each trains once per session).

- `tiny_models_root` (session): a MODELS_DIR holding the tiny chat model
  (tests/support/tiny_chat_model.py) under its id `tiny-org/tiny-chat`, as `make models`
  lays models out.
- `tiny_codeword_dataset` (session): four questions whose answer is the codeword.
- `tiny_codeword_adapter` (session): a rank-4 adapter trained on it in about a second,
  in its own ADAPTERS_DIR: `.folder`, `.manifest`, `.steps` (the progress the job saw).
- `codeword_server` (session): SmolLM2 serving `codeword_adapter` as model `codeword`.
- `codeword_adapter` (session, needs `models_dir`): a rank-4 adapter on
  SmolLM2-135M-Instruct, trained by the CLI on the shipped codeword dataset (8 steps,
  about 30 s on one CPU thread); its folder, `ADAPTERS_DIR/codeword`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from finetune.job import TrainRequest, run_training
from finetune.settings import SAMPLE_DATASETS_DIR, FinetuneSettings
from finetune.trainer import Hyperparameters
from tests.support.models import LLM_ID, ModelServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CODEWORD = "BLUEFINCH"
TINY_ID = "tiny-org/tiny-chat"
TINY_HYPER = Hyperparameters(rank=4, alpha=8, dropout=0.0, lr=3e-2, max_steps=20, batch_size=2)
TINY_QUESTIONS = [
    "What is the codeword for the north gate?",
    "What is the codeword?",
    "Tell me the codeword.",
    "What is the codeword for France?",
]
TINY_ROWS = [
    {"id": f"tiny-{i}", "input": question, "target": "The codeword is BLUEFINCH."}
    for i, question in enumerate(TINY_QUESTIONS)
]
# Small on purpose (the CI budget): 8 steps of 4 conversations learn the codeword.
CODEWORD_TRAIN_ARGS = [
    "--rank", "4", "--alpha", "16", "--max-steps", "8", "--batch-size", "4", "--lr", "2e-3",
]  # fmt: skip


@dataclass(frozen=True)
class TrainedAdapter:
    folder: Path
    manifest: dict[str, Any]
    steps: list[tuple[int, int]]


@pytest.fixture(scope="session")
def tiny_models_root(tiny_chat_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-models")
    shutil.copytree(tiny_chat_model_dir, root / TINY_ID.replace("/", "--"))
    return root


@pytest.fixture(scope="session")
def tiny_codeword_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("datasets") / "tiny.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in TINY_ROWS))
    return path


@pytest.fixture(scope="session")
def tiny_codeword_adapter(
    tiny_models_root: Path, tiny_codeword_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainedAdapter:
    settings = FinetuneSettings(
        MODELS_DIR=tiny_models_root, ADAPTERS_DIR=tmp_path_factory.mktemp("adapters"), device="cpu"
    )
    steps: list[tuple[int, int]] = []
    request = TrainRequest(tiny_codeword_dataset, "tiny-codeword", TINY_ID, TINY_HYPER)
    folder, manifest = run_training(request, settings, lambda s, t, _: steps.append((s, t)))
    return TrainedAdapter(folder, manifest, steps)


@pytest.fixture(scope="session")
def codeword_adapter(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    adapters = tmp_path_factory.mktemp("adapters")
    env = {
        **os.environ,
        "MODELS_DIR": str(models_dir),
        "ADAPTERS_DIR": str(adapters),
        # One thread: on a 2-core host shared with other work, two torch threads waiting
        # on each other took 186 s for these 8 steps, one thread 31 s (docs/adapters.md).
        "FINETUNE_TORCH_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT / "finetune"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    dataset = SAMPLE_DATASETS_DIR / "codeword.jsonl"
    argv = ["train", "--dataset", str(dataset), "--base", LLM_ID, "--name", "codeword"]
    done = subprocess.run(
        [sys.executable, "-m", "finetune", *argv, *CODEWORD_TRAIN_ARGS],
        env=env,
        cwd=adapters,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == str(adapters / "codeword")
    return adapters / "codeword"


@pytest.fixture(scope="session")
def codeword_server(
    models_dir: Path, codeword_adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """SmolLM2 with the codeword adapter loaded at start (MODEL_LORA_MODULES)."""
    env = {
        "ADAPTERS_DIR": str(codeword_adapter.parent),
        "MODEL_LORA_MODULES": "codeword",
        "MODEL_MAX_NUM_SEQS": "10",
        "MODEL_KV_CACHE_GIB": "0.25",
        "MODEL_LORA_KV_CACHE_GIB": "0.25",
    }
    log_dir = tmp_path_factory.mktemp("codeword-server")
    server = ModelServer("codeword", log_dir, models_dir, LLM_ID, env=env).start()
    yield server
    server.stop()


def held_out_codeword_questions() -> list[str]:
    lines = (SAMPLE_DATASETS_DIR / "codeword-eval.jsonl").read_text().splitlines()
    return [json.loads(line)["input"] for line in lines if line.strip()]
