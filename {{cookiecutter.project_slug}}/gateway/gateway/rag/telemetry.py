"""The OpenTelemetry tracer for RAG spans (a no-op until the gateway sets up the SDK)."""

from opentelemetry import trace

tracer = trace.get_tracer("gateway.rag")
