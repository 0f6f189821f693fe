"""Shared pytest plugins for every test folder in the project."""

pytest_plugins = [
    "tests.support.strict_skips",
    "tests.support.redis",
    "tests.support.models",
    "tests.support.evals_upstream",
    "tests.support.gateway",
    "tests.support.tiny_chat_model",
]
