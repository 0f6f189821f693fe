"""What the gateway, the model service and evals share instead of copying: the OTLP
export rules and tracer setup (`otlp`, `tracing`), GenAI span attributes
(`genai_spans`), JSON log lines (`logs`) and the OpenAI error shape (`errors`).

Each service keeps a thin module of its own for what differs (its error type table,
its instrumentations, its span fields) and imports the rest from here.
"""
