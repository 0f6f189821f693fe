from devstack.cli import app

app(prog_name="devstack")
