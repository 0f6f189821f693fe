"""Shared pytest plugins for every test folder in the project."""

pytest_plugins = [
    "tests.support.strict_skips",
    "tests.support.redis",
    "tests.support.models",
    "tests.support.evals_upstream",
    "tests.support.gateway",
    "tests.support.tiny_chat_model",
    "tests.support.adapters",
]

try:
    from hypothesis import settings
except ImportError:  # hypothesis comes with the test dependencies; a bare install lacks it
    pass
else:
    # Property tests and schema fuzzing keep no example database in the project tree.
    settings.register_profile("blueprint", database=None)
    settings.load_profile("blueprint")
