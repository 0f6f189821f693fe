"""The LoRA training loop: base weights frozen, low-rank adapters on every linear layer.

A plain PyTorch loop (AdamW, linear decay, gradient clipping) rather than
`transformers.Trainer`: a few dozen lines that show every step, with the loss of each
step reported to the caller (progress bar, loss curve). The same code runs on the GPU
when there is one (bfloat16 where supported) and on the CPU in float32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

from finetune.base_model import BaseModelInfo
from finetune.dataset import Conversation
from finetune.encoding import Example, collate, encode

StepCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Hyperparameters:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    epochs: int = 3
    lr: float = 1e-3
    max_steps: int | None = None
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0
    # PEFT's shorthand for every linear layer but the output head.
    target_modules: str = "all-linear"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def total_steps(self, rows: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return self.epochs * math.ceil(rows / self.batch_size)


@dataclass(frozen=True)
class TrainResult:
    losses: list[float]
    device: str
    dtype: str
    seconds: float


class DeviceError(ValueError):
    pass


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("FINETUNE_DEVICE=cuda, but no GPU is available (set auto or cpu)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def train(
    base: BaseModelInfo,
    conversations: list[Conversation],
    hyper: Hyperparameters,
    output_dir: Path,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train an adapter on `conversations` and save it (PEFT format) in `output_dir`."""
    started = time.monotonic()
    torch.manual_seed(hyper.seed)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    examples = [encode(tokenizer, c, hyper.max_length) for c in conversations]
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    dtype = pick_dtype(device)
    model = _lora_model(base, hyper, dtype).to(device)
    total = hyper.total_steps(len(examples))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hyper.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, total)
    model.train()
    losses: list[float] = []
    for step, batch in enumerate(_batches(examples, hyper, total), start=1):
        loss = model(**{k: v.to(device) for k, v in collate(batch, pad_id).items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        if on_step is not None:
            on_step(step, total, losses[-1])
    # Embeddings are never adapted; saving them would also make PEFT look the base up online.
    model.save_pretrained(output_dir, save_embedding_layers=False)
    seconds = time.monotonic() - started
    return TrainResult(losses=losses, device=device.type, dtype=str(dtype), seconds=seconds)


def _lora_model(base: BaseModelInfo, hyper: Hyperparameters, dtype: torch.dtype) -> Any:
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=dtype)
    config = LoraConfig(
        r=hyper.rank,
        lora_alpha=hyper.alpha,
        lora_dropout=hyper.dropout,
        target_modules=hyper.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    # get_peft_model records this machine's path; servers match an adapter to its base by
    # the model id, so the saved adapter_config.json names the id.
    peft_model.peft_config["default"].base_model_name_or_path = base.id
    return peft_model


def _batches(
    examples: list[Example], hyper: Hyperparameters, total: int
) -> Iterator[list[Example]]:
    """`total` batches, each epoch in a fresh seeded order."""
    generator = torch.Generator().manual_seed(hyper.seed)
    produced = 0
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), hyper.batch_size):
            if produced == total:
                return
            yield [examples[i] for i in order[start : start + hyper.batch_size]]
            produced += 1
