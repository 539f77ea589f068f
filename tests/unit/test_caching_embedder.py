"""CachingEmbedder: identical texts are embedded once per process, the vectors
are the inner embedder's, the cache is bounded (least recently used out) and
keyed by model version."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from autoembed.settings import Settings
from autoembed.worker import drain
from autoembed.worker.embedders import (
    CachingEmbedder,
    Embedder,
    HashingEmbedder,
    load_embedder,
)


class Counting(HashingEmbedder):
    """A hashing embedder that records what it was asked to embed."""

    def __init__(self, dimensions: int = 16) -> None:
        super().__init__(dimensions)
        self.calls: list[list[str]] = []

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return super().embed(texts)


def test_a_repeated_text_is_embedded_once_and_gets_the_same_vector() -> None:
    inner = Counting()
    cache = CachingEmbedder(inner, 10)
    first = cache.embed(["red apples", "green pears"])
    second = cache.embed(["green pears", "blue plums", "red apples"])
    assert inner.calls == [["red apples", "green pears"], ["blue plums"]]
    assert np.array_equal(second[0], first[1])
    assert np.array_equal(second[2], first[0])
    assert np.array_equal(
        second, HashingEmbedder(16).embed(["green pears", "blue plums", "red apples"])
    )
    assert (cache.hits, cache.misses) == (2, 3)


def test_repeats_within_one_call_are_embedded_once() -> None:
    inner = Counting()
    out = CachingEmbedder(inner, 10).embed(["same", "other", "same", "same"])
    assert inner.calls == [["same", "other"]]
    assert np.array_equal(out[0], out[2])
    assert np.array_equal(out[0], out[3])
    assert out.shape == (4, 16)
    assert out.dtype == np.float32


def test_the_least_recently_used_text_is_forgotten_first() -> None:
    inner = Counting()
    cache = CachingEmbedder(inner, 2)
    cache.embed(["a", "b"])
    cache.embed(["a"])  # a is now more recent than b
    cache.embed(["c"])  # evicts b
    assert len(cache) == 2
    inner.calls.clear()
    cache.embed(["a", "b", "c"])
    assert inner.calls == [["b"]]


def test_the_key_is_exact_text() -> None:
    inner = Counting()
    cache = CachingEmbedder(inner, 10)
    cache.embed(["Red apples"])
    cache.embed(["Red apples ", "red apples"])
    assert inner.calls == [["Red apples"], ["Red apples ", "red apples"]]


def test_the_cache_does_not_share_vectors_with_callers() -> None:
    cache = CachingEmbedder(Counting(), 10)
    out = cache.embed(["pears"])
    out[0] = 0
    assert cache.embed(["pears"]).any()


def test_remembered_vectors_are_served_without_embedding() -> None:
    inner = Counting(4)
    cache = CachingEmbedder(inner, 10)
    known = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32)
    cache.remember(["x", "y"], known)
    assert np.array_equal(cache.embed(["y", "x"]), known[::-1])
    assert inner.calls == []


def test_non_finite_vectors_are_not_kept() -> None:
    inner = Counting(2)
    cache = CachingEmbedder(inner, 10)
    cache.remember(["bad"], np.array([[np.nan, 0]], dtype=np.float32))
    assert len(cache) == 0
    assert np.isfinite(cache.embed(["bad"])).all()
    assert inner.calls == [["bad"]]


def test_wrong_shapes_are_refused() -> None:
    cache = CachingEmbedder(Counting(4), 10)
    with pytest.raises(ValueError, match="2 texts need 2 vectors of 4 dimensions"):
        cache.remember(["a", "b"], np.zeros((2, 3), dtype=np.float32))

    class Broken(Counting):
        def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
            return np.zeros((len(texts), 3), dtype=np.float32)

    with pytest.raises(ValueError, match=r"shape \(1, 3\), expected \(1, 4\)"):
        CachingEmbedder(Broken(4), 10).embed(["a"])


def test_it_describes_itself_as_the_inner_embedder() -> None:
    inner = HashingEmbedder(8)
    cache = CachingEmbedder(inner, 5)
    assert cache.version() == inner.version()
    assert (cache.name, cache.dimensions, cache.max_seq_length, cache.special_tokens) == (
        inner.name,
        8,
        inner.max_seq_length,
        inner.special_tokens,
    )
    assert cache.token_spans("a b") == inner.token_spans("a b")
    assert cache.count_tokens("a b") == inner.count_tokens("a b")
    assert drain.default_batch_size(cache) == 16  # the CPU's batch size


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        CachingEmbedder(HashingEmbedder(4), 0)


def test_load_embedder_wraps_one_cache_per_process_and_size() -> None:
    plain = load_embedder("hash:12")
    cached = load_embedder("hash:12", cache_size=100)
    assert isinstance(cached, CachingEmbedder)
    assert cached.inner is plain
    assert load_embedder("hash:12", cache_size=100) is cached
    assert load_embedder("hash:12", cache_size=0) is plain


def test_workers_use_the_cache_size_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def fake_load(name: str, device: str | None = None, cache_size: int = 0) -> Embedder:
        seen.append(cache_size)
        raise drain.ModelLoadError("stop here")

    config = drain.queue.VectorizerConfig(1, "docs", None, 0, False)
    version = drain.queue.VersionConfig(7, 1, "hash:12", 12, "active", None)

    monkeypatch.setattr(drain, "load_embedder", fake_load)
    monkeypatch.setattr(drain.queue, "report_error", lambda conn, vid, error: None)
    with pytest.raises(drain.VectorizerUnavailable):
        drain.pipeline_for(None, config, version, Settings(embed_cache=500))  # type: ignore[arg-type]
    assert seen == [500]
