from model_service.cli import app

app(prog_name="model_service")
