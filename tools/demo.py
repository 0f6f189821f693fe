"""`make demo`: bake the template with its defaults and show the whole stack working.

1. bake the template (default answers) into build/demo/ from a clean snapshot;
2. prepare the default models (`make models OFFLINE=1`, into the shared MODELS_DIR);
3. start the stack without Docker (`make dev`) and wait until every service is healthy;
4. send a chat request through the gateway with the `openai` SDK, then the same request
   again to show the exact cache answering (`x-cache: hit`);
5. run the evals smoke suite against the gateway and print where its report is;
6. stop the stack with Ctrl-C (SIGINT) and check that nothing is left running.

Run it with the template's environment (`make demo` does); MODELS_DIR, when set, names
the shared model cache so models are prepared once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from cookiecutter.main import cookiecutter
from dotenv import dotenv_values
from openai import OpenAI
from rich.console import Console
from rich.panel import Panel

# Run as `python tools/demo.py`: this folder is on sys.path.
from template_snapshot import snapshot_template

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / "build" / "demo"
QUESTION = "What is the capital of France? Answer in one sentence."
START_TIMEOUT = 900.0
STOP_TIMEOUT = 60.0
PORTS = ("GATEWAY_PORT", "LLM_PORT", "EMBEDDER_PORT", "DEV_REDIS_PORT")

console = Console(soft_wrap=True)


def step(number: int, text: str) -> None:
    console.rule(f"[bold cyan]{number}. {text}")


def bake() -> Path:
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    DEMO_DIR.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="template-") as tmp:
        project = cookiecutter(
            str(snapshot_template(Path(tmp))),
            no_input=True,
            output_dir=str(DEMO_DIR),
            overwrite_if_exists=True,
        )
    path = Path(project)
    # The post-gen hook wrote the project's settings file, with a random master key and
    # Redis password, as for every user.
    if not (path / ".env").is_file():
        raise RuntimeError(f"the bake wrote no .env in {path}")
    console.print(f"baked [bold]{path.relative_to(ROOT)}[/] with the default answers")
    return path


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_ports(settings: dict[str, str]) -> dict[str, str]:
    """The project's ports, or free ones where something on this machine holds them."""
    chosen = {}
    for variable in PORTS:
        port = int(os.environ.get(variable) or settings[variable])
        if not port_free(port):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                free = sock.getsockname()[1]
            console.print(f"port {port} is busy here: {variable}={free} for this demo")
            port = free
        chosen[variable] = str(port)
    return chosen


def run_make(project: Path, *args: str, env: dict[str, str]) -> None:
    command = ["make", *args, f"PYTHON={sys.executable}"]
    console.print(f"$ {' '.join(command)}", style="dim", highlight=False)
    subprocess.run(command, cwd=project, env=env, check=True)


class DevStack:
    """`make dev` in the background, stopped like Ctrl-C.

    Its full output goes to a log file; the stack's own progress lines (from the
    `devstack` watcher and honcho's `system` lines) are echoed here.
    """

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        command = ["make", "dev", f"PYTHON={sys.executable}"]
        self.log_path = DEMO_DIR / "make-dev.log"
        console.print(f"$ {' '.join(command)}   (full log: {self.log_path.relative_to(ROOT)})")
        self.process = subprocess.Popen(
            command,
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
        self.output: list[str] = []
        self._echo = threading.Thread(target=self._pump, daemon=True)
        self._echo.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        with self.log_path.open("w") as log:
            for line in self.process.stdout:
                self.output.append(line)
                log.write(line)
                log.flush()
                if any(f" {name} " in line[:20] for name in ("devstack", "system")):
                    console.print(line.rstrip(), style="dim", highlight=False, markup=False)

    def log_tail(self, lines: int = 40) -> str:
        return "".join(self.output[-lines:])

    def wait_ready(self, url: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < START_TIMEOUT:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"make dev exited ({self.process.returncode}) before it was ready:\n"
                    + self.log_tail()
                )
            if any("stack ready" in line for line in self.output[-50:]):
                with httpx.Client(timeout=5) as client:
                    if client.get(url).status_code == 200:
                        return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"the stack was not ready after {START_TIMEOUT:.0f}s")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the process group, then wait for everything to exit."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        self._echo.join(timeout=5)
        return code


@contextmanager
def dev_stack(project: Path, env: dict[str, str]) -> Iterator[DevStack]:
    stack = DevStack(project, env)
    try:
        yield stack
    finally:
        if stack.process.poll() is None:
            stack.interrupt()


def chat_twice(base_url: str, api_key: str, model: str) -> None:
    client = OpenAI(base_url=base_url, api_key=api_key, timeout=120, max_retries=0)
    request = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 32,
        "temperature": 0,
    }
    for attempt in ("first", "repeat"):
        started = time.perf_counter()
        raw = client.chat.completions.with_raw_response.create(**request)  # type: ignore[call-overload]
        elapsed_ms = (time.perf_counter() - started) * 1000
        completion = raw.parse()
        answer = completion.choices[0].message.content or ""
        cache = raw.headers.get("x-cache", "absent")
        overhead = raw.headers.get("x-gateway-overhead-ms", "?")
        console.print(
            Panel(
                f"[bold]Q:[/] {QUESTION}\n[bold]A:[/] {answer.strip()}",
                title=f"{attempt} request: {elapsed_ms:.0f} ms",
                subtitle=f"x-cache: {cache}   x-gateway-overhead-ms: {overhead}",
            )
        )
        if not answer.strip():
            raise RuntimeError("the model returned an empty answer")
        if attempt == "repeat":
            if cache != "hit":
                raise RuntimeError(f"expected a cache hit on the repeat, got x-cache: {cache}")
            console.print("x-cache: hit — the repeat was answered from the gateway's cache")


def run_evals(project: Path, env: dict[str, str]) -> Path:
    reports = project / "reports"
    before = set(reports.rglob("*")) if reports.exists() else set()
    run_make(project, "eval", "SUITE=smoke", env=env)
    written = sorted(
        (path for path in reports.rglob("*") if path.is_file() and path not in before),
        key=lambda path: (path.suffix != ".md", path.name),
    )
    if not written:
        raise RuntimeError(f"the smoke suite wrote no report under {reports}")
    return written[0]


def main() -> int:
    started = time.monotonic()
    step(1, "Bake the template with its default answers")
    project = bake()
    settings = {k: v or "" for k, v in dotenv_values(project / ".env").items()}

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    if os.environ.get("MODELS_DIR"):
        env["MODELS_DIR"] = os.environ["MODELS_DIR"]

    step(2, "Prepare the default models (make models OFFLINE=1)")
    run_make(project, "models", "OFFLINE=1", env=env)

    step(3, "Start the stack without Docker (make dev)")
    ports = choose_ports(settings)
    env.update(ports)
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    env["EVALS_BASE_URL"] = f"{gateway}/v1"
    with dev_stack(project, env) as stack:
        took = stack.wait_ready(f"{gateway}/readyz")
        console.print(f"[green]every service is healthy[/] after {took:.0f}s")

        step(4, "Chat through the gateway with the openai SDK, twice")
        chat_twice(f"{gateway}/v1", settings["GATEWAY_MASTER_KEY"], settings["LLM_MODEL"])

        step(5, "Run the evals smoke suite against the gateway")
        report = run_evals(project, env)
        console.print(f"evals report: [bold]{report.relative_to(ROOT)}[/]")

        step(6, "Stop everything (Ctrl-C)")
        code = stack.interrupt()
    deadline = time.monotonic() + 30
    while (leftovers := [v for v, port in ports.items() if not port_free(int(port))]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    if leftovers:
        raise RuntimeError(f"still listening after the stop: {', '.join(leftovers)}")
    console.print(f"make dev stopped (exit {code}); every port is free again")
    console.rule(f"[bold green]demo finished in {time.monotonic() - started:.0f}s")
    console.print(f"The baked project is in {project.relative_to(ROOT)}; see its README.md.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
