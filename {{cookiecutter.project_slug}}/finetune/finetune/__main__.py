from finetune.cli import app

app(prog_name="finetune")
