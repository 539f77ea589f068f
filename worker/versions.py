"""Model versions: what exactly produced a vector.

A version is the model's name, a digest of its weights, its dimension,
pooling and normalization, its maximum sequence length and the numeric
precision it runs at (fp16 and fp32 give slightly different vectors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelVersion:
    model: str
    weights_digest: str
    dimensions: int
    pooling: str
    normalized: bool
    dtype: str
    max_seq_length: int

    @property
    def tag(self) -> str:
        norm = "/normalized" if self.normalized else ""
        return (
            f"{self.model}@sha256:{self.weights_digest[:16]}"
            f"/d{self.dimensions}/{self.pooling}{norm}/{self.dtype}/seq{self.max_seq_length}"
        )


def digest_tensors(named: Iterable[tuple[str, str, tuple[int, ...], bytes | memoryview]]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of each tensor, in name order."""
    h = hashlib.sha256()
    for name, dtype, shape, data in sorted(named, key=lambda t: t[0]):
        h.update(name.encode())
        h.update(b"\0" + dtype.encode() + b"\0" + repr(tuple(shape)).encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()
