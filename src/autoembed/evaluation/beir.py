"""BEIR-format test collections: ``corpus.jsonl``, ``queries.jsonl`` (and
``queries_<split>.jsonl`` where a collection keeps a split's queries apart),
``qrels/<split>.tsv``. Malformed files are refused with the file, the line and
what was wrong."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QRELS_HEADER = ("query-id", "corpus-id", "score")

# query id -> corpus id -> graded relevance (0 or less: judged not relevant)
Qrels = dict[str, dict[str, int]]


class BeirFormatError(ValueError):
    """A collection's files are missing or malformed."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Query:
    id: str
    text: str


@dataclass(frozen=True)
class Collection:
    """One split of a collection: the whole corpus, the queries that have at
    least one relevant judgment in the split, and the split's judgments."""

    name: str
    path: Path
    split: str
    corpus: list[Document]
    queries: list[Query]
    qrels: Qrels
    # Queries in the split's qrels without a relevant (score > 0) document;
    # they cannot be scored and are left out of ``queries``.
    skipped_queries: list[str] = field(default_factory=list)

    @property
    def judgments(self) -> int:
        return sum(len(d) for d in self.qrels.values())

    def corpus_digest(self) -> str:
        """sha256 of the corpus, the same as ``corpus_digest_sql`` computes
        from a table holding it (rows ordered by id, bytewise)."""
        return corpus_digest(self.corpus)


def corpus_digest(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for i, d in enumerate(sorted(docs, key=lambda d: d.id.encode())):
        h.update(("\x1e" if i else "").encode())
        h.update(f"{d.id}\x1f{d.title}\x1f{d.text}".encode())
    return h.hexdigest()


def splits(path: Path) -> list[str]:
    """The splits a collection has judgments for (``qrels/*.tsv``)."""
    return sorted(p.stem for p in (path / "qrels").glob("*.tsv"))


def load(path: str | Path, split: str = "test") -> Collection:
    path = Path(path)
    if not path.is_dir():
        raise BeirFormatError(f"{path}: not a directory (expected a BEIR-format collection)")
    qrels_file = path / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = ", ".join(splits(path)) if (path / "qrels").is_dir() else "none: no qrels/ folder"
        raise BeirFormatError(f"{qrels_file}: no judgments for split {split!r} (splits: {have})")
    corpus = load_corpus(path / "corpus.jsonl")
    queries = load_queries(path, split)
    qrels = load_qrels(qrels_file)
    doc_ids = {d.id for d in corpus}
    for qid, docs in qrels.items():
        if qid not in queries:
            raise BeirFormatError(
                f"{qrels_file}: query-id {qid!r} has judgments but no text in "
                + " or ".join(f.name for f in _query_files(path, split))
            )
        missing = sorted(set(docs) - doc_ids)
        if missing:
            raise BeirFormatError(
                f"{qrels_file}: query {qid!r} judges corpus-id {missing[0]!r}, "
                f"which is not in {path / 'corpus.jsonl'}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
    # Query order: as in the query files, for reproducible --limit-queries.
    judged = [q for q in queries.values() if q.id in qrels]
    relevant = [q for q in judged if any(r > 0 for r in qrels[q.id].values())]
    kept = {q.id for q in relevant}
    skipped = [q.id for q in judged if q.id not in kept]
    return Collection(path.resolve().name, path, split, corpus, relevant, qrels, skipped)


def _jsonl(file: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not file.is_file():
        raise BeirFormatError(f"{file}: file not found")
    with file.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BeirFormatError(f"{file}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise BeirFormatError(f"{file}, line {n}: expected a JSON object")
            yield n, obj


def _field(obj: dict[str, Any], key: str, file: Path, n: int, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise BeirFormatError(f'{file}, line {n}: missing "{key}"')
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BeirFormatError(
            f'{file}, line {n}: "{key}" must be a string, got {type(value).__name__}'
        )
    text = str(value)
    if key == "_id" and not text.strip():
        raise BeirFormatError(f'{file}, line {n}: "_id" is empty')
    return text


def load_corpus(file: Path) -> list[Document]:
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for n, obj in _jsonl(file):
        doc_id = _field(obj, "_id", file, n)
        if doc_id in seen:
            raise BeirFormatError(
                f"{file}, line {n}: duplicate _id {doc_id!r} (first on line {seen[doc_id]})"
            )
        seen[doc_id] = n
        title = _field(obj, "title", file, n, required=False)
        docs.append(Document(doc_id, title, _field(obj, "text", file, n)))
    if not docs:
        raise BeirFormatError(f"{file}: no documents")
    return docs


def _query_files(path: Path, split: str) -> list[Path]:
    files = [path / "queries.jsonl", path / f"queries_{split}.jsonl"]
    found = [f for f in files if f.is_file()]
    if not found:
        raise BeirFormatError(f"{files[0]}: file not found (nor {files[1].name})")
    return found


def load_queries(path: Path, split: str) -> dict[str, Query]:
    """Queries from ``queries.jsonl`` and ``queries_<split>.jsonl``, whichever exist."""
    queries: dict[str, Query] = {}
    for file in _query_files(path, split):
        for n, obj in _jsonl(file):
            q = Query(_field(obj, "_id", file, n), _field(obj, "text", file, n))
            if q.id in queries and queries[q.id].text != q.text:
                raise BeirFormatError(
                    f"{file}, line {n}: query {q.id!r} appears twice with different texts"
                )
            queries[q.id] = q
    return queries


def load_qrels(file: Path) -> Qrels:
    qrels: Qrels = {}
    with file.open(encoding="utf-8") as f:
        lines = enumerate(f, 1)
        header = next((fields for _, line in lines if (fields := line.split())), None)
        if header is None or tuple(h.lower() for h in header) != QRELS_HEADER:
            raise BeirFormatError(
                f"{file}: the first line must be the header "
                f"'query-id<TAB>corpus-id<TAB>score', got {' '.join(header or ['nothing'])!r}"
            )
        for n, line in lines:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) == 1 and not fields[0].strip():
                continue
            if len(fields) != 3:
                fields = line.split()
            if len(fields) != 3:
                raise BeirFormatError(
                    f"{file}, line {n}: expected 3 tab-separated fields "
                    f"(query-id, corpus-id, score), got {len(fields)}"
                )
            qid, doc_id, raw = (x.strip() for x in fields)
            try:
                score = int(raw)
            except ValueError:
                raise BeirFormatError(
                    f"{file}, line {n}: score must be an integer, got {raw!r}"
                ) from None
            judged = qrels.setdefault(qid, {})
            if doc_id in judged and judged[doc_id] != score:
                raise BeirFormatError(
                    f"{file}, line {n}: query {qid!r} judges {doc_id!r} twice "
                    f"({judged[doc_id]} and {score})"
                )
            judged[doc_id] = score
    if not qrels:
        raise BeirFormatError(f"{file}: no judgments after the header")
    return qrels
