"""LoRA fine-tuning job: `python -m finetune train --dataset FILE --name NAME`."""
