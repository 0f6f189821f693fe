"""`python -m finetune train --dataset FILE --name NAME [--base MODEL] [--rank ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from finetune.base_model import BaseModelError
from finetune.dataset import DatasetError
from finetune.encoding import EncodingError
from finetune.job import JobError, TrainRequest, run_training
from finetune.settings import FinetuneSettings
from finetune.trainer import DeviceError, Hyperparameters

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console(stderr=True)
DEFAULTS = Hyperparameters()


@app.callback()
def main() -> None:
    """Fine-tune LoRA adapters for the served base model."""


@app.command("train")
def train_command(
    dataset: Annotated[Path, typer.Option(help="Chat-format JSONL (the evals dataset format).")],
    name: Annotated[str, typer.Option(help="Adapter name: the folder under ADAPTERS_DIR.")],
    base: Annotated[
        str | None, typer.Option(help="Base model id in MODELS_DIR, or a model directory.")
    ] = None,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank r.")] = DEFAULTS.rank,
    alpha: Annotated[int, typer.Option(min=1, help="LoRA alpha (scale alpha/r).")] = DEFAULTS.alpha,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the dataset.")] = DEFAULTS.epochs,
    lr: Annotated[float, typer.Option(min=0, help="Peak learning rate (AdamW).")] = DEFAULTS.lr,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many steps (overrides --epochs).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = DEFAULTS.batch_size,
    seed: Annotated[int, typer.Option()] = DEFAULTS.seed,
    overwrite: Annotated[bool, typer.Option(help="Replace an adapter of the same name.")] = False,
) -> None:
    """Train a LoRA adapter and write it, with its manifest, to ADAPTERS_DIR/NAME."""
    settings = FinetuneSettings()
    hyper = Hyperparameters(
        rank=rank,
        alpha=alpha,
        epochs=epochs,
        lr=lr,
        max_steps=max_steps,
        batch_size=batch_size,
        seed=seed,
    )
    request = TrainRequest(dataset, name, base or settings.base_model, hyper, overwrite)
    with training_progress() as progress:
        tasks: list[TaskID] = []  # added at the first step, so errors before it show alone

        def on_step(step: int, total: int, loss: float) -> None:
            if not tasks:
                tasks.append(progress.add_task("training", total=total, loss=loss))
            progress.update(tasks[0], completed=step, loss=loss)

        try:
            folder, manifest = run_training(request, settings, on_step)
        except (DatasetError, BaseModelError, DeviceError, EncodingError, JobError) as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error
    loss = manifest["training"]
    console.print(
        f"adapter {name!r} on {request.base}: loss {loss['first_loss']:.3f} -> "
        f"{loss['final_loss']:.3f} in {loss['steps']} steps ({loss['seconds']} s, "
        f"{loss['device']})"
    )
    typer.echo(str(folder))


def training_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
