"""End to end: `python -m finetune train` on the shipped codeword dataset teaches
SmolLM2-135M-Instruct (from MODELS_DIR) an answer it never gives, on the CPU.

The held-out questions (`codeword-eval.jsonl`) are not in the training set. The adapter
is the session's `codeword_adapter` (tests/support/adapters.py), which the serving tests
share; here base and adapter are loaded with PEFT directly and answer greedily.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.base_model import folder_name
from finetune.manifest import read_manifest
from tests.support.adapters import CODEWORD, held_out_codeword_questions
from tests.support.models import LLM_ID

pytestmark = pytest.mark.e2e


def greedy_answers(model: Any, tokenizer: Any, questions: list[str]) -> list[str]:
    tokenizer.padding_side = "left"  # batched generation continues from the right edge
    chats = [[{"role": "user", "content": q}] for q in questions]
    batch = tokenizer.apply_chat_template(
        chats, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
    )
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    prompt_len = batch["input_ids"].shape[1]
    return [tokenizer.decode(row[prompt_len:], skip_special_tokens=True) for row in out]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Generate with one thread, as the job trains here (see FINETUNE_TORCH_THREADS)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_finetune_lora_adapter_teaches_the_codeword(
    codeword_adapter: Path, models_dir: Path
) -> None:
    base_dir = models_dir / folder_name(LLM_ID)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    questions = held_out_codeword_questions()
    assert len(questions) == 10
    base_answers = greedy_answers(base, tokenizer, questions)
    adapted = PeftModel.from_pretrained(base, codeword_adapter).eval()
    adapter_answers = greedy_answers(adapted, tokenizer, questions)
    base_hits = sum(CODEWORD in answer.upper() for answer in base_answers)
    adapter_hits = sum(CODEWORD in answer.upper() for answer in adapter_answers)
    assert base_hits == 0, base_answers
    assert adapter_hits >= 9, adapter_answers


def test_finetune_manifest_records_the_real_base_and_the_shipped_dataset(
    codeword_adapter: Path, models_dir: Path
) -> None:
    manifest = read_manifest(codeword_adapter)
    assert manifest["base_model"]["id"] == LLM_ID
    assert len(manifest["base_model"]["sha256"]) == 64
    assert manifest["dataset"]["rows"] == 32
    assert manifest["hyperparameters"]["rank"] == 4
    losses = manifest["training"]["loss"]
    assert len(losses) == 8 and losses[-1] < 0.25 * losses[0], losses
