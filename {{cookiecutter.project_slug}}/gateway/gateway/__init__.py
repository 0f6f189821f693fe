"""OpenAI-compatible gateway: keys, rate limits, caching, routing, guardrails, telemetry."""

__version__ = "0.1.0"
