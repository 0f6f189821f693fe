"""The RAG chain in LCEL, in two halves so a stream can send sources before tokens.

`retrieval_chain`: {question, history} -> adds `standalone_question` (a follow-up
rewritten by the LLM when there is history) and `documents` (from the retriever).
`answer_chain`: that dict -> the answer text; with no documents it answers NO_ANSWER
without calling the model, so an unsupported question cannot be answered from the
model's own memory.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableBranch, RunnableLambda, RunnablePassthrough

from gateway.rag.prompts import (
    ANSWER_PROMPT,
    CONDENSE_PROMPT,
    NO_ANSWER,
    format_context,
    format_transcript,
)

MAX_STANDALONE_CHARS = 500


def _standalone_or_original(inputs: dict[str, Any]) -> str:
    """The rewritten question, or the original when the model's rewrite is unusable."""
    rewritten = inputs["rewritten"].strip().strip('"').strip()
    first_line = rewritten.splitlines()[0].strip() if rewritten else ""
    if not first_line or len(first_line) > MAX_STANDALONE_CHARS:
        return str(inputs["question"])
    return first_line


def build_retrieval_chain(llm: BaseChatModel, retriever: BaseRetriever) -> Runnable[Any, Any]:
    condense = (
        {
            "transcript": lambda inputs: format_transcript(inputs["history"]),
            "question": itemgetter("question"),
        }
        | CONDENSE_PROMPT
        | llm
        | StrOutputParser()
    )
    rewrite = RunnablePassthrough.assign(rewritten=condense) | RunnableLambda(
        _standalone_or_original
    )
    standalone = RunnableBranch(
        (lambda inputs: bool(inputs["history"]), rewrite),
        itemgetter("question"),
    )
    return RunnablePassthrough.assign(standalone_question=standalone).assign(
        documents=itemgetter("standalone_question") | retriever
    )


def build_answer_chain(llm: BaseChatModel) -> Runnable[Any, str]:
    grounded = (
        {
            "context": lambda inputs: format_context(inputs["documents"]),
            "question": itemgetter("standalone_question"),
        }
        | ANSWER_PROMPT
        | llm
        | StrOutputParser()
    )
    return RunnableBranch(
        (lambda inputs: not inputs["documents"], RunnableLambda(lambda _: NO_ANSWER)),
        grounded,
    )
