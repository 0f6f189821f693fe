"""The fine-tuning job on a tiny model built in the test: a rank-4 LoRA adapter trains in
a second, its loss falls, its manifest is complete, and PEFT loads it back."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from finetune.base_model import BaseModelError, content_hash
from finetune.cli import app
from finetune.dataset import Conversation, DatasetError, load_conversations
from finetune.encoding import IGNORE_INDEX, EncodingError, collate, encode
from finetune.job import JobError, TrainRequest, run_training
from finetune.manifest import read_manifest
from finetune.settings import FinetuneSettings
from finetune.trainer import DeviceError, Hyperparameters, pick_device
from tests.support.adapters import TINY_HYPER, TINY_ID, TrainedAdapter

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EVALS_DATASETS = PROJECT_ROOT / "evals" / "evals" / "datasets"
HYPER = TINY_HYPER


def settings_for(models_root: Path, adapters: Path) -> FinetuneSettings:
    return FinetuneSettings(MODELS_DIR=models_root, ADAPTERS_DIR=adapters, device="cpu")


@pytest.fixture(scope="module")
def trained(tiny_codeword_adapter: TrainedAdapter) -> tuple[Path, dict[str, Any]]:
    """The session's tiny adapter (tests/support/adapters.py), shared with the serving tests."""
    assert tiny_codeword_adapter.steps == [(s, 20) for s in range(1, 21)]  # progress saw all
    return tiny_codeword_adapter.folder, tiny_codeword_adapter.manifest


def test_lora_adapter_training_lowers_the_loss(trained: tuple[Path, dict[str, Any]]) -> None:
    losses = trained[1]["training"]["loss"]
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses


def test_finetune_manifest_is_complete(
    trained: tuple[Path, dict[str, Any]], tiny_models_root: Path, tiny_codeword_dataset: Path
) -> None:
    folder, manifest = trained
    assert read_manifest(folder) == manifest
    assert manifest["name"] == "tiny-codeword"
    assert manifest["base_model"] == {
        "id": TINY_ID,
        "revision": None,  # a local folder records no hub revision; the hash identifies it
        "sha256": content_hash(tiny_models_root / "tiny-org--tiny-chat"),
    }
    assert (
        manifest["dataset"]["sha256"]
        == hashlib.sha256(tiny_codeword_dataset.read_bytes()).hexdigest()
    )
    assert manifest["dataset"]["rows"] == 4
    assert manifest["hyperparameters"] == HYPER.as_dict()
    training = manifest["training"]
    assert (training["steps"], training["device"], training["dtype"]) == (
        20,
        "cpu",
        "torch.float32",
    )
    assert training["final_loss"] == training["loss"][-1]
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert (folder / manifest["files"]["loss_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(manifest["versions"]) == {"peft", "transformers", "torch"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "loss.png",
        "manifest.json",
    ]
    # Servers match an adapter to its base by the model id, not this machine's path.
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == TINY_ID
    assert adapter_config["r"] == 4 and adapter_config["peft_type"] == "LORA"


def training_loss(model: Any, tokenizer: Any, dataset: Path) -> float:
    examples = [encode(tokenizer, c, 512) for c in load_conversations(dataset)]
    with torch.no_grad():
        return float(model(**collate(examples, tokenizer.pad_token_id)).loss)


def test_lora_adapter_reloads_with_peft(
    trained: tuple[Path, dict[str, Any]], tiny_chat_model_dir: Path, tiny_codeword_dataset: Path
) -> None:
    folder, manifest = trained
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    base_loss = training_loss(base, tokenizer, tiny_codeword_dataset)
    adapted = PeftModel.from_pretrained(base, folder).eval()
    adapter_loss = training_loss(adapted, tokenizer, tiny_codeword_dataset)
    # The saved weights are the trained ones: on the training data the reloaded adapter
    # is as good as training left it, far better than the base.
    assert adapter_loss < 0.5 * base_loss
    assert adapter_loss == pytest.approx(manifest["training"]["final_loss"], rel=0.5, abs=0.05)


def test_finetune_loss_covers_only_the_assistant_answer(tiny_chat_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    conversation = Conversation(
        prompt=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the codeword?"},
        ],
        answer="The codeword is BLUEFINCH.",
    )
    example = encode(tokenizer, conversation, 512)
    learned = [
        t for t, label in zip(example.input_ids, example.labels, strict=True) if label != -100
    ]
    assert example.labels[: len(example.labels) - len(learned)] == [IGNORE_INDEX] * (
        len(example.labels) - len(learned)
    )
    assert tokenizer.decode(learned) == "The codeword is BLUEFINCH.<|im_end|>\n"
    batch = collate(
        [
            example,
            encode(
                tokenizer,
                Conversation(prompt=[{"role": "user", "content": "Hi"}], answer="Hello!"),
                512,
            ),
        ],
        2,
    )
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    padding = batch["attention_mask"] == 0
    assert padding.any() and bool((batch["labels"][padding] == IGNORE_INDEX).all())


def test_finetune_reads_the_evals_dataset_format(tmp_path: Path) -> None:
    smoke = load_conversations(EVALS_DATASETS / "smoke.jsonl")
    assert smoke[0].prompt == [{"role": "user", "content": "What is the capital of France?"}]
    assert smoke[0].answer == "Paris"  # the first acceptable answer
    extraction = load_conversations(EVALS_DATASETS / "extraction.jsonl")
    assert json.loads(extraction[0].answer) == {"name": "Alice", "age": 30, "city": "Paris"}
    chat = tmp_path / "chat.jsonl"
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Codeword?"},
    ]
    chat.write_text(json.dumps({"id": "c1", "input": messages, "target": "BLUEFINCH"}) + "\n")
    (conversation,) = load_conversations(chat)
    assert conversation.messages == [*messages, {"role": "assistant", "content": "BLUEFINCH"}]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "r1", "input": "Build a bomb.", "label": "refuse"}', ":1: no `target`"),
        ('{"id": "x", "target": "y"}', ":1: invalid row"),
        ("not json", ":1: invalid row"),
        (
            '{"input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],'
            ' "target": "c"}',
            ":1: `input` must end with a user",
        ),
    ],
)
def test_finetune_dataset_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_conversations(path)
    with pytest.raises(DatasetError, match="not found"):
        load_conversations(tmp_path / "missing.jsonl")


def test_finetune_refuses_bad_names_existing_adapters_and_unknown_bases(
    trained: tuple[Path, dict[str, Any]], tiny_models_root: Path, tiny_codeword_dataset: Path
) -> None:
    settings = settings_for(tiny_models_root, trained[0].parent)
    for name in ["../escape", "", "a/b", ".hidden"]:
        with pytest.raises(JobError, match="invalid adapter name"):
            run_training(TrainRequest(tiny_codeword_dataset, name, TINY_ID, HYPER), settings)
    with pytest.raises(JobError, match="already exists"):
        run_training(TrainRequest(tiny_codeword_dataset, "tiny-codeword", TINY_ID, HYPER), settings)
    with pytest.raises(BaseModelError, match="run `make models` or set MODELS_DIR"):
        run_training(TrainRequest(tiny_codeword_dataset, "other", "org/absent", HYPER), settings)


def test_finetune_failed_run_leaves_no_adapter_behind(
    tiny_models_root: Path, tiny_codeword_dataset: Path, tmp_path: Path
) -> None:
    settings = settings_for(tiny_models_root, tmp_path / "adapters")
    too_short = Hyperparameters(max_steps=1, max_length=8)
    with pytest.raises(EncodingError, match="more than --max-length 8"):
        run_training(TrainRequest(tiny_codeword_dataset, "broken", TINY_ID, too_short), settings)
    assert list((tmp_path / "adapters").iterdir()) == []


def test_finetune_cuda_request_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(DeviceError, match="FINETUNE_DEVICE=cuda, but no GPU is available"):
            pick_device("cuda")
    assert pick_device("cpu").type == "cpu"


def test_finetune_cli_trains_and_reports_errors(
    tiny_models_root: Path, tiny_codeword_dataset: Path, tmp_path: Path
) -> None:
    env = {
        "MODELS_DIR": str(tiny_models_root),
        "ADAPTERS_DIR": str(tmp_path),
        "FINETUNE_DEVICE": "cpu",
        "FINETUNE_TORCH_THREADS": "1",
    }
    threads = torch.get_num_threads()
    args = ["train", "--dataset", str(tiny_codeword_dataset), "--base", TINY_ID, "--name", "cli"]
    runner = CliRunner()
    done = runner.invoke(app, [*args, "--rank", "4", "--max-steps", "2", "--lr", "0.01"], env=env)
    assert done.exit_code == 0, done.output
    assert done.stdout.strip().endswith(str(tmp_path / "cli"))
    manifest = read_manifest(tmp_path / "cli")
    assert manifest["hyperparameters"]["rank"] == 4 and manifest["training"]["steps"] == 2
    assert torch.get_num_threads() == 1  # FINETUNE_TORCH_THREADS was applied
    torch.set_num_threads(threads)
    again = runner.invoke(app, args, env=env)
    assert again.exit_code == 2 and "already exists" in again.output
    missing = runner.invoke(app, [*args[:1], "--dataset", "nope.jsonl", *args[3:-1], "x"], env=env)
    assert missing.exit_code == 2 and "dataset not found" in missing.output
