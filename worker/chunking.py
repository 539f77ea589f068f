"""Split text into chunks that fit the model, by the model's own tokens.

Chunks are exact substrings of the text, cut between words where possible,
overlapping by a number of tokens. Nothing is dropped: a text longer than
the model's window becomes several chunks, never a truncated one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Spans = list[tuple[int, int]]


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets into the source text
    end: int


def _starts_word(spans: Spans, text: str, k: int) -> bool:
    """Token k begins after whitespace, so cutting before it splits no word."""
    return k == 0 or (
        spans[k][0] > spans[k - 1][1] and text[spans[k - 1][1] : spans[k][0]].isspace()
    )


def chunk_text(
    text: str,
    spans: Spans,
    max_tokens: int,
    overlap: int,
    count_tokens: Callable[[str], int] | None = None,
    limit: int | None = None,
) -> list[Chunk]:
    """Chunks of at most ``max_tokens`` tokens (special tokens excluded).

    ``spans`` are the tokens' character offsets. When ``count_tokens`` and
    ``limit`` are given, each chunk is re-tokenized and shortened until the
    model would see at most ``limit`` tokens (a cut inside a word can
    tokenize differently on its own).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens), got {overlap}")
    spans = [s for s in spans if s[1] > s[0]]
    n = len(spans)
    chunks: list[Chunk] = []
    i = 0
    while i < n:
        j = min(i + max_tokens, n)
        if j < n:
            # Prefer a cut between words within the second half of the window.
            k = j
            while k > i + max(max_tokens // 2, 1) and not _starts_word(spans, text, k):
                k -= 1
            if _starts_word(spans, text, k):
                j = k
        while True:
            piece = text[spans[i][0] : spans[j - 1][1]]
            if count_tokens is None or limit is None or j - i <= 1 or count_tokens(piece) <= limit:
                break
            j -= 1
        chunks.append(Chunk(piece, spans[i][0], spans[j - 1][1]))
        if j >= n:
            break
        nxt = max(j - overlap, i + 1)
        while nxt < j and not _starts_word(spans, text, nxt):
            nxt += 1
        i = nxt
    return chunks
