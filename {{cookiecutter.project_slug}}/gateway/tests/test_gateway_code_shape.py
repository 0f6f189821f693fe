"""The shape the gateway's code keeps (docs/gateway.md, "Request path"): short functions,
route differences in one module, Redis clients created in one place."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"
MAX_FUNCTION_LINES = 50
ROUTE_NAMES = {"chat", "completion", "embedding", "text_completion", "embeddings"}


def modules() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))]


def declarations_only(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of assignments and expressions only (such as metric declarations)."""
    return all(isinstance(s, ast.Assign | ast.AnnAssign | ast.Expr) for s in node.body)


def test_no_function_is_longer_than_fifty_lines() -> None:
    long = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and not declarations_only(node):
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines})")
    assert modules() and not long, long


def test_only_the_route_adapters_compare_route_names() -> None:
    found = []
    for path, tree in modules():
        if path.name == "route_adapters.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                names = {o.value for o in operands if isinstance(o, ast.Constant)}
                if names & ROUTE_NAMES:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def test_redis_clients_are_created_in_the_store_module_or_a_cli() -> None:
    creators = set()
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                if node.func.attr == "from_url" and "redis" in owner_name.lower():
                    creators.add(path.relative_to(PACKAGE).as_posix())
    assert "redis_store.py" in creators
    assert all(p == "redis_store.py" or p.endswith("cli.py") for p in creators), creators
