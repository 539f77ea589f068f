"""Model versions: the tag names everything that changes the numbers, and
the weights digest sees every byte but not the order tensors come in."""

from __future__ import annotations

import dataclasses

import pytest

from autoembed.worker.versions import ModelVersion, digest_tensors

VERSION = ModelVersion(
    model="sentence-transformers/all-MiniLM-L6-v2",
    weights_digest="0123456789abcdef" + "f" * 48,
    dimensions=384,
    pooling="mean",
    normalized=True,
    dtype="fp16",
    max_seq_length=256,
)

TENSORS = [
    ("encoder.weight", "float32", (2, 3), bytes(range(24))),
    ("encoder.bias", "float32", (3,), b"\x01" * 12),
    ("pooler.weight", "float16", (4,), b"\x02" * 8),
]


def test_the_tag_names_model_digest_prefix_dims_pooling_and_dtype() -> None:
    tag = VERSION.tag
    assert tag.startswith("sentence-transformers/all-MiniLM-L6-v2@")
    assert "0123456789abcdef" in tag
    assert VERSION.weights_digest not in tag  # a prefix, not the whole digest
    for part in ("384", "mean", "normalized", "fp16", "256"):
        assert part in tag


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other-model"},
        {"weights_digest": "1123456789abcdef" + "f" * 48},
        {"dimensions": 768},
        {"pooling": "cls"},
        {"normalized": False},
        {"dtype": "fp32"},
        {"max_seq_length": 512},
    ],
)
def test_any_change_gives_another_tag(change: dict[str, object]) -> None:
    assert dataclasses.replace(VERSION, **change).tag != VERSION.tag  # type: ignore[arg-type]


def test_digest_ignores_the_order_of_tensors() -> None:
    assert digest_tensors(TENSORS) == digest_tensors(reversed(TENSORS))
    assert digest_tensors(iter(TENSORS)) == digest_tensors(sorted(TENSORS, key=lambda t: t[3]))


def test_digest_is_a_sha256_hex_string() -> None:
    digest = digest_tensors(TENSORS)
    assert len(digest) == 64
    int(digest, 16)


@pytest.mark.parametrize("position", [0, 7, 23])
def test_digest_changes_when_any_byte_changes(position: int) -> None:
    name, dtype, shape, data = TENSORS[0]
    flipped = bytearray(data)
    flipped[position] ^= 0x01
    changed = [(name, dtype, shape, bytes(flipped)), *TENSORS[1:]]
    assert digest_tensors(changed) != digest_tensors(TENSORS)


@pytest.mark.parametrize(
    "changed",
    [
        ("decoder.weight", "float32", (2, 3), bytes(range(24))),
        ("encoder.weight", "bfloat16", (2, 3), bytes(range(24))),
        ("encoder.weight", "float32", (3, 2), bytes(range(24))),
    ],
)
def test_digest_changes_with_a_tensors_name_dtype_or_shape(
    changed: tuple[str, str, tuple[int, ...], bytes],
) -> None:
    assert changed[3] == TENSORS[0][3]
    assert digest_tensors([changed, *TENSORS[1:]]) != digest_tensors(TENSORS)
