"""Quality and performance evals against an OpenAI-compatible endpoint, with a CI gate."""

__version__ = "0.1.0"
