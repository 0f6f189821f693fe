"""Token ids to text pieces, with stop strings.

Streaming and non-streaming responses both join the pieces this produces, so the two
are identical by construction. Text that could be the start of a stop string is held
back until it is known not to be one.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


@dataclass
class Piece:
    text: str
    stopped: bool = False


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._decoder = DecodeStream(skip_special_tokens=True)
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self._pending = ""

    def push(self, token_id: int) -> Piece:
        """Feed one generated token; returns the text that is now safe to emit."""
        decoded = self._decoder.step(self._tokenizer, token_id)
        if decoded:
            self._pending += decoded
        if self._stop:
            cut = self._first_stop(self._pending)
            if cut is not None:
                text, self._pending = self._pending[:cut], ""
                return Piece(text, stopped=True)
        safe = len(self._pending) - self._hold
        if safe <= 0:
            return Piece("")
        text, self._pending = self._pending[:safe], self._pending[safe:]
        return Piece(text)

    def flush(self) -> str:
        """The held-back tail, once generation ended without a stop string."""
        text, self._pending = self._pending, ""
        return text

    def _first_stop(self, text: str) -> int | None:
        positions = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(positions) if positions else None
