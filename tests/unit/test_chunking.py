"""worker.chunking.chunk_text with the hashing embedder's token spans: chunks
fit, overlap, are exact substrings cut between words, and drop nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoembed.worker.chunking import Chunk, chunk_text
from autoembed.worker.embedders import HashingEmbedder

TOKENIZER = HashingEmbedder(8)
Spans = list[tuple[int, int]]


def spans(text: str) -> Spans:
    return TOKENIZER.token_spans(text)


def chunk(
    text: str,
    max_tokens: int,
    overlap: int = 0,
    count_tokens: Callable[[str], int] | None = None,
    limit: int | None = None,
) -> list[Chunk]:
    return chunk_text(text, spans(text), max_tokens, overlap, count_tokens, limit)


def tokens_in(c: Chunk, all_spans: Spans) -> list[int]:
    """Indexes of the tokens lying inside the chunk."""
    return [k for k, (a, b) in enumerate(all_spans) if c.start <= a and b <= c.end]


def assert_covers_and_fits(text: str, chunks: list[Chunk], max_tokens: int) -> None:
    all_spans = spans(text)
    covered: set[int] = set()
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text, "no empty chunks"
        inside = tokens_in(c, all_spans)
        assert 1 <= len(inside) <= max_tokens
        covered.update(inside)
    assert covered == set(range(len(all_spans))), "every token is in some chunk"


def test_a_short_text_is_one_chunk_equal_to_the_stripped_text() -> None:
    text = "  \n red apples, green pears!  \t"
    assert [c.text for c in chunk(text, 50, 5)] == ["red apples, green pears!"]


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n"])
def test_empty_or_whitespace_text_has_no_chunks(text: str) -> None:
    assert chunk(text, 10, 2) == []


def test_a_long_text_becomes_several_chunks_of_at_most_max_tokens() -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    chunks = chunk(text, 50, 10)
    assert len(chunks) > 20
    assert_covers_and_fits(text, chunks, 50)


def test_consecutive_chunks_overlap_by_the_overlap_in_tokens() -> None:
    text = " ".join(f"w{i}" for i in range(300))
    all_spans = spans(text)
    chunks = chunk(text, 40, 8)
    for a, b in itertools.pairwise(chunks):
        shared = set(tokens_in(a, all_spans)) & set(tokens_in(b, all_spans))
        assert len(shared) == 8


def test_overlap_snaps_forward_to_a_word_start() -> None:
    # Every word is three tokens ("x-y"): an overlap may shrink to a word
    # boundary but never grows past the requested one.
    text = " ".join(f"a{i}-b{i}" for i in range(200))
    all_spans = spans(text)
    chunks = chunk(text, 30, 7)
    for a, b in itertools.pairwise(chunks):
        shared = set(tokens_in(a, all_spans)) & set(tokens_in(b, all_spans))
        assert 5 <= len(shared) <= 7
    assert_covers_and_fits(text, chunks, 30)


def test_cuts_fall_between_words_when_possible() -> None:
    text = " ".join(f"alpha{i}-beta{i}.gamma{i}" for i in range(300))  # 5 tokens a word
    chunks = chunk(text, 23, 4)
    assert len(chunks) > 10
    for c in chunks:
        assert c.start == 0 or text[c.start - 1].isspace(), repr(c.text[:20])
        assert c.end == len(text) or text[c.end].isspace(), repr(c.text[-20:])
    assert_covers_and_fits(text, chunks, 23)


def test_a_word_longer_than_max_tokens_is_cut_inside_the_word() -> None:
    text = "start " + "-".join(["x"] * 50) + " end"
    chunks = chunk(text, 10, 2)
    assert_covers_and_fits(text, chunks, 10)


def test_max_tokens_one_gives_one_token_per_chunk() -> None:
    text = "ab-cd ef"
    assert [c.text for c in chunk(text, 1, 0)] == ["ab", "-", "cd", "ef"]


def test_a_single_enormous_token_is_one_chunk() -> None:
    text = "x" * 100_000
    chunks = chunk(text, 128, 16, count_tokens=len, limit=128)
    assert chunks == [Chunk(text, 0, 100_000)]


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (-3, 0), (10, -1), (10, 10), (5, 9)])
def test_invalid_max_tokens_or_overlap_raise(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=r"max_tokens|overlap"):
        chunk("some text here", max_tokens, overlap)


def test_the_limit_recheck_shrinks_a_chunk_that_would_exceed_it() -> None:
    # Counting characters: a 20-token window of ~8-character words is far
    # longer than 40 characters, so every chunk must be shortened.
    text = " ".join(f"word{i:04d}" for i in range(120))
    unchecked = chunk(text, 20, 2)
    checked = chunk(text, 20, 2, count_tokens=len, limit=40)
    assert max(len(c.text) for c in unchecked) > 40
    assert all(len(c.text) <= 40 for c in checked)
    assert_covers_and_fits(text, checked, 20)


def test_the_limit_recheck_counts_each_chunk_on_its_own() -> None:
    seen: list[str] = []

    def count(piece: str) -> int:
        seen.append(piece)
        return len(spans(piece)) + 2

    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk(text, 10, 0, count_tokens=count, limit=12)
    assert {c.text for c in chunks} <= set(seen)
    assert_covers_and_fits(text, chunks, 10)


# --------------------------------------------------------------- property

WORDS = st.text(
    alphabet=st.characters(categories=["L", "N", "Mn"], max_codepoint=0x2FFF), min_size=1
)
PUNCT = st.sampled_from(list(".,;:!?-'\"()[]…—«»"))
SPACE = st.sampled_from([" ", "  ", "\n", "\t", "\u00a0", "\u3000", "\r\n"])
TEXTS = st.lists(st.one_of(WORDS, PUNCT, SPACE), max_size=80).map("".join)


@settings(max_examples=300, deadline=None, database=None)
@given(text=TEXTS, max_tokens=st.integers(1, 20), data=st.data())
def test_chunks_cover_every_token_fit_and_are_substrings(
    text: str, max_tokens: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1), label="overlap")
    chunks = chunk(text, max_tokens, overlap)
    assert_covers_and_fits(text, chunks, max_tokens)
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
