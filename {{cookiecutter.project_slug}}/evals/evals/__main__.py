from evals.cli import app

app(prog_name="evals")
