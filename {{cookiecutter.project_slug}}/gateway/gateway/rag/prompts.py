"""Prompts of the RAG chain: rewrite a follow-up, answer from the context only."""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate

NO_ANSWER = "I don't know: the documents do not answer this question."

# Small models answer a follow-up instead of rewriting it unless shown how: one example.
CONDENSE_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You rewrite a follow-up question into a standalone question that names what "
            "it is about. Do not answer it. Reply with the rewritten question only.",
        ),
        (
            "human",
            "Conversation:\nUser: Which port does the gateway use?\nAssistant: Port 8080.\n\n"
            "Follow-up: and who maintains it?\nStandalone question:",
        ),
        ("ai", "Who maintains the gateway?"),
        ("human", "Conversation:\n{transcript}\n\nFollow-up: {question}\nStandalone question:"),
    ]
)

ANSWER_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Answer the question using only the context below. Be brief. If the context "
            f'does not contain the answer, reply exactly: "{NO_ANSWER}"\n\n'
            "Context:\n{context}",
        ),
        ("human", "{question}"),
    ]
)


def format_transcript(history: list[BaseMessage]) -> str:
    speakers = {"human": "User", "ai": "Assistant"}
    return "\n".join(
        f"{speakers.get(message.type, message.type.capitalize())}: {message.text}"
        for message in history
        if message.type in speakers
    )


def format_context(documents: list[Document]) -> str:
    return "\n\n".join(
        f"[{n}] {doc.metadata.get('title', '')} ({doc.metadata.get('source', '')})\n"
        f"{doc.page_content}"
        for n, doc in enumerate(documents, start=1)
    )
