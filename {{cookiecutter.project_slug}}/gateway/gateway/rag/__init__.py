"""Retrieval-augmented generation: ingest documents into Redis, answer from them.

`gateway.rag.api.routes` serves `POST /v1/rag/chat`; `gateway.rag.cli.app` is the
`gateway rag ingest|list|delete` command group. Both are optional parts of the
gateway: it includes them when this package imports.
"""
