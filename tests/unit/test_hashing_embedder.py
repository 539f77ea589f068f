"""The hashing embedder used by most tests: deterministic, normalized,
similar for shared words, and able to fail or stall on request."""

from __future__ import annotations

import time

import numpy as np
import pytest

from autoembed.worker.embedders import HashingEmbedder, ModelLoadError, load_embedder


def test_it_is_deterministic_across_instances() -> None:
    texts = ["red apples", "a completely different sentence", "Ünïcödé wörds"]
    first = HashingEmbedder(64).embed(texts)
    second = HashingEmbedder(64).embed(list(texts))
    assert first.shape == (3, 64)
    assert first.dtype == np.float32
    assert np.array_equal(first, second)


def test_vectors_are_unit_length() -> None:
    out = HashingEmbedder(32).embed(["one", "two words", "many many more words here"])
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_a_text_without_tokens_is_the_zero_vector() -> None:
    out = HashingEmbedder(16).embed(["   "])
    assert not out.any()


def test_similar_texts_score_higher_than_unrelated_ones() -> None:
    e = HashingEmbedder(256)
    query, close, far = e.embed(
        ["green apples and pears", "apples and pears, green and ripe", "the roman empire fell"]
    )
    assert float(query @ close) > float(query @ far) + 0.3


def test_case_does_not_matter_but_words_do() -> None:
    e = HashingEmbedder(64)
    a, b, c = e.embed(["Red Apples", "red apples", "red pears"])
    assert np.allclose(a, b)
    assert not np.allclose(a, c)


def test_token_spans_and_count_include_punctuation_and_special_tokens() -> None:
    e = HashingEmbedder(8)
    text = "don't stop, ok"
    spans = e.token_spans(text)
    assert [text[a:b] for a, b in spans] == ["don", "'", "t", "stop", ",", "ok"]
    assert e.count_tokens(text) == 6 + e.special_tokens


def test_the_failure_marker_makes_embedding_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    e = HashingEmbedder(8)
    monkeypatch.setenv("AUTOEMBED_HASH_FAIL_ON", "BOOM")
    with pytest.raises(ValueError, match="BOOM"):
        e.embed(["fine", "this goes BOOM"])
    assert e.embed(["fine"]).shape == (1, 8)
    monkeypatch.delenv("AUTOEMBED_HASH_FAIL_ON")
    assert e.embed(["this goes BOOM"]).shape == (1, 8)


def test_the_delay_slows_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    e = HashingEmbedder(8)
    monkeypatch.setenv("AUTOEMBED_HASH_DELAY_MS", "150")
    start = time.monotonic()
    e.embed(["a"])
    assert time.monotonic() - start >= 0.14


@pytest.mark.parametrize("dims", [0, 16001])
def test_dimensions_out_of_range_are_refused(dims: int) -> None:
    with pytest.raises(ModelLoadError, match=r"1\.\.16000"):
        HashingEmbedder(dims)


def test_load_embedder_returns_one_instance_per_name() -> None:
    a = load_embedder("hash:24")
    assert isinstance(a, HashingEmbedder)
    assert a.dimensions == 24
    assert load_embedder("hash:24") is a
    assert load_embedder("hash:25") is not a


def test_its_version_is_stable_and_names_its_dimensions() -> None:
    v = HashingEmbedder(48).version()
    assert v == HashingEmbedder(48).version()
    assert v.model == "hash:48"
    assert v.dimensions == 48
    assert v.normalized
    assert v.tag != HashingEmbedder(49).version().tag


# ---------------------------------------------------------------- null:<dims>


def test_the_null_embedder_gives_equal_texts_equal_unit_vectors() -> None:
    e = load_embedder("null:64")
    a, b, c = e.embed(["the same text", "another text", "the same text"])
    assert e.name == "null:64"
    assert a.shape == (64,)
    assert np.allclose([np.linalg.norm(a), np.linalg.norm(b)], 1.0, atol=1e-6)
    assert np.array_equal(a, c)
    assert not np.allclose(a, b)


def test_the_null_embedder_is_a_model_version_of_its_own() -> None:
    null, hashing = load_embedder("null:64").version(), load_embedder("hash:64").version()
    assert null.model == "null:64"
    assert null.tag != hashing.tag
    assert null.weights_digest != hashing.weights_digest
