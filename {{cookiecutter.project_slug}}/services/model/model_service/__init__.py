"""OpenAI-compatible model serving: vLLM where it can run, transformers elsewhere."""

__version__ = "0.1.0"
