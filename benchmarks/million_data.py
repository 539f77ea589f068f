"""The vectors of benchmarks/million.py: real MiniLM embeddings of SciFact
(cached), synthetic vectors shaped like them, and a binary COPY stream of
pgvector values.

Synthetic vectors, and why this shape: uniform random unit vectors in 384
dimensions are all nearly orthogonal to each other (no clusters, no
neighbourhoods), which makes every approximate index look bad and no
real collection behaves like that; i.i.d. Gaussian noise around a few
centres is the opposite extreme. Here each vector is a real MiniLM
embedding of a SciFact abstract (a centre, drawn uniformly) plus Gaussian
noise with the covariance of the real embeddings themselves (their principal
directions and variances, scaled by ``spread``), normalized: a Gaussian
mixture with 5,183 components that keeps the anisotropic spectrum of real
sentence embeddings (most variance in a few dozen directions), so a
vector's neighbours are mostly paraphrase-like perturbations of the same
abstract and its neighbour abstracts.

Measured (spread 0.6): a held-out query's 1st, 10th, 100th and 1000th
nearest of 100,000 are at cosine 0.82, 0.76, 0.48, 0.37 (real SciFact
abstracts among themselves: 0.68, 0.52, 0.39, 0.23): clusters of ~20
vectors per abstract at 100,000 rows, ~190 at 1,000,000, where a query's
10 nearest are among ~190 nearly equidistant cluster-mates, which is harder
for an approximate index (and for binary quantization) than the smoother
decay of real text.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from autoembed.evaluation import beir

Matrix = npt.NDArray[np.float32]

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".autoembed" / "million"
DATASET = REPO.parent / "shared" / "datasets" / "scifact"


@dataclass(frozen=True)
class SciFact:
    doc_ids: list[str]
    docs: Matrix  # one normalized MiniLM vector per abstract (title + text)
    query_ids: list[str]
    queries: Matrix
    qrels: beir.Qrels


def scifact(dataset: Path = DATASET, say: object = print) -> SciFact:
    """SciFact's abstracts and test queries embedded by MiniLM (one vector
    per abstract, its title and text as one text, truncated at the model's
    256 tokens, as sentence-transformers does); cached under
    .autoembed/million by the corpus digest."""
    collection = beir.load(dataset)
    digest = collection.corpus_digest()[:16]
    file = CACHE / f"scifact-minilm-{digest}.npz"
    doc_ids = [d.id for d in collection.corpus]
    query_ids = [q.id for q in collection.queries]
    if file.is_file():
        data = np.load(file)
        return SciFact(doc_ids, data["docs"], query_ids, data["queries"], collection.qrels)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from autoembed.worker.embedders import DEFAULT_MODEL, SentenceTransformerEmbedder, load_embedder

    embedder = load_embedder(DEFAULT_MODEL)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    t = time.perf_counter()
    texts = [f"{d.title} {d.text}".strip() for d in collection.corpus]
    if callable(say):
        say(f"embedding {len(texts)} SciFact abstracts with MiniLM (once; cached in {file}) ...")
    docs = embedder.model.encode(texts, batch_size=32, normalize_embeddings=True)
    queries = embedder.model.encode(
        [q.text for q in collection.queries], batch_size=64, normalize_embeddings=True
    )
    docs, queries = docs.astype(np.float32), queries.astype(np.float32)
    if callable(say):
        say(f"embedded in {time.perf_counter() - t:.0f} s")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(file, docs=docs, queries=queries)
    return SciFact(doc_ids, docs, query_ids, queries, collection.qrels)


class Mixture:
    """Normalized draws of centre + spread * N(0, covariance of the centres)."""

    def __init__(self, centres: Matrix, spread: float = 0.6, seed: int = 0) -> None:
        self.centres = centres
        self.spread = spread
        self.seed = seed
        centred = centres - centres.mean(axis=0)
        # principal directions and standard deviations of the real embeddings
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        self._basis = (vt * (s / np.sqrt(len(centres)))[:, None]).astype(np.float32)

    def draw(self, n: int, rng: np.random.Generator) -> Matrix:
        pick = rng.integers(0, len(self.centres), n)
        noise = rng.standard_normal((n, self._basis.shape[0]), dtype=np.float32) @ self._basis
        x = self.centres[pick] + self.spread * noise
        out: Matrix = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        return out

    def batches(self, rows: int, batch: int = 50_000) -> Iterator[Matrix]:
        """rows vectors, reproducibly (the same seed gives the same rows)."""
        rng = np.random.default_rng(self.seed)
        done = 0
        while done < rows:
            n = min(batch, rows - done)
            yield self.draw(n, rng)
            done += n

    def queries(self, n: int) -> Matrix:
        """Held-out draws of the same mixture (another seed)."""
        return self.draw(n, np.random.default_rng(self.seed + 1_000_003))

    def digest(self, rows: int) -> str:
        h = hashlib.sha256(self.centres.tobytes())
        h.update(struct.pack("<dqq", self.spread, self.seed, rows))
        return h.hexdigest()[:16]


COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)


def copy_rows(first_id: int, vectors: Matrix) -> bytes:
    """Rows (id bigint, embedding vector) in PostgreSQL's binary COPY format
    (pgvector's binary form: int16 dimensions, int16 unused, float4s), without
    the header and trailer."""
    n, dims = vectors.shape
    row = np.dtype(
        [("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
         ("dims", ">i2"), ("unused", ">i2"), ("values", ">f4", (dims,))]
    )  # fmt: skip
    out = np.empty(n, dtype=row)
    out["fields"] = 2
    out["id_len"] = 8
    out["id"] = np.arange(first_id, first_id + n)
    out["vec_len"] = 4 + 4 * dims
    out["dims"] = dims
    out["unused"] = 0
    out["values"] = vectors
    return out.tobytes()
