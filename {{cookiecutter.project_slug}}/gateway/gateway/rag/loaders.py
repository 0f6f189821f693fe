"""Read Markdown, text, HTML and PDF files into LangChain documents with a title."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from langchain_community.document_loaders import BSHTMLLoader, PyPDFLoader, TextLoader
from langchain_core.document_loaders import BaseLoader
from langchain_text_splitters import Language, RecursiveCharacterTextSplitter, TextSplitter

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES

MARKDOWN_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


class UnreadableFileError(Exception):
    """The file cannot be turned into text; the message says why."""


@dataclass(frozen=True)
class LoadedFile:
    text: str
    title: str


def _loader_for(path: Path) -> BaseLoader:
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES | TEXT_SUFFIXES:
        return TextLoader(str(path), encoding="utf-8")
    if suffix in HTML_SUFFIXES:
        # html.parser ships with Python; lxml would be one more native dependency.
        return BSHTMLLoader(
            str(path),
            open_encoding="utf-8",
            bs_kwargs={"features": "html.parser"},
            get_text_separator="\n",
        )
    if suffix in PDF_SUFFIXES:
        return PyPDFLoader(str(path), mode="single")
    raise UnreadableFileError(f"unsupported file type {suffix or '(none)'}")


def _title(path: Path, text: str, metadata: dict[str, object]) -> str:
    suffix = path.suffix.lower()
    if suffix in MARKDOWN_SUFFIXES and (heading := MARKDOWN_HEADING.search(text)):
        return heading.group(1)
    meta_title = metadata.get("title")
    if isinstance(meta_title, str) and meta_title.strip():
        return meta_title.strip()
    if suffix in TEXT_SUFFIXES:
        first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if 0 < len(first_line) <= 120:
            return first_line
    return path.stem.replace("-", " ").replace("_", " ")


def load_file(path: Path) -> LoadedFile:
    loader = _loader_for(path)
    try:
        documents = loader.load()
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, UnicodeDecodeError):
            raise UnreadableFileError("not UTF-8 text") from exc
        raise UnreadableFileError(f"{type(cause).__name__}: {cause}".strip()) from exc
    text = "\n\n".join(doc.page_content for doc in documents).strip()
    # Collapse the blank runs HTML and PDF extraction leave behind.
    text = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text)
    if not text:
        raise UnreadableFileError("no extractable text")
    metadata = documents[0].metadata if documents else {}
    return LoadedFile(text=text, title=_title(path, text, metadata))


def splitter_for(path: Path, chunk_size: int, chunk_overlap: int) -> TextSplitter:
    if path.suffix.lower() in MARKDOWN_SUFFIXES:
        return RecursiveCharacterTextSplitter.from_language(
            Language.MARKDOWN, chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
