"""Performance suite: latency and throughput with vLLM's serving-benchmark definitions."""
