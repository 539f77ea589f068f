"""Loading BEIR-format collections, and the errors for malformed ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autoembed.evaluation.beir import BeirFormatError, Document, corpus_digest, load

TINY = Path(__file__).resolve().parent.parent / "data" / "beir_tiny"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A copy of tests/data/beir_tiny to break."""
    return Path(shutil.copytree(TINY, tmp_path / "tiny"))


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_loads_the_test_split() -> None:
    c = load(TINY)
    assert c.name == "beir_tiny"
    assert c.split == "test"
    assert len(c.corpus) == 12
    assert c.corpus[0] == Document(
        "d1",
        "Volcanic eruptions in Iceland",
        "Magma and basalt lava flows from the Eyjafjallajokull volcano grounded flights "
        "across Europe.",
    )
    assert c.corpus[11].title == ""
    # in file order; q6 has only a judgment of 0 and is skipped
    assert [q.id for q in c.queries] == ["q1", "q2", "q3", "q4", "q5", "q7"]
    assert c.skipped_queries == ["q6"]
    assert c.qrels["q3"] == {"d5": 2, "d10": 1}
    assert c.qrels["q5"] == {"d8": 1, "d3": 0}
    assert c.judgments == 9


def test_train_split_reads_its_own_query_file() -> None:
    c = load(TINY, "train")
    assert [(q.id, q.text) for q in c.queries] == [
        ("q101", "castle moats and drawbridges"),
        ("q102", "marathon glycogen wall"),
    ]
    assert c.qrels == {"q101": {"d7": 1}, "q102": {"d6": 1}}


def test_unknown_split_names_the_ones_there() -> None:
    with pytest.raises(BeirFormatError, match=r"split 'dev' \(splits: test, train\)"):
        load(TINY, "dev")


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BeirFormatError, match="not a directory"):
        load(tmp_path / "nope")


def test_missing_corpus(tiny: Path) -> None:
    (tiny / "corpus.jsonl").unlink()
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl: file not found"):
        load(tiny)


def test_missing_queries(tiny: Path) -> None:
    (tiny / "queries.jsonl").unlink()
    with pytest.raises(BeirFormatError, match=r"queries\.jsonl: file not found"):
        load(tiny)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", r"line 3: not valid JSON"),
        ("[1, 2]", r"line 3: expected a JSON object"),
        ('{"title": "t", "text": "x"}', r'line 3: missing "_id"'),
        ('{"_id": "z", "title": "t"}', r'line 3: missing "text"'),
        ('{"_id": "z", "text": ["x"]}', r'line 3: "text" must be a string, got list'),
        ('{"_id": " ", "text": "x"}', r'line 3: "_id" is empty'),
        ('{"_id": "d1", "text": "x"}', r"line 3: duplicate _id 'd1' \(first on line 1\)"),
    ],
)
def test_malformed_corpus_line(tiny: Path, line: str, error: str) -> None:
    lines = (tiny / "corpus.jsonl").read_text().splitlines()
    lines.insert(2, line)
    write(tiny / "corpus.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl, " + error):
        load(tiny)


def test_numeric_ids_and_missing_title_are_accepted(tiny: Path) -> None:
    write(tiny / "corpus.jsonl", '{"_id": 7, "text": "seven"}\n\n')
    write(tiny / "queries.jsonl", '{"_id": 1, "text": "q"}\n')
    write(tiny / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n1\t7\t1\n")
    c = load(tiny)
    assert c.corpus == [Document("7", "", "seven")]
    assert c.qrels == {"1": {"7": 1}}


def test_empty_corpus(tiny: Path) -> None:
    write(tiny / "corpus.jsonl", "\n")
    with pytest.raises(BeirFormatError, match="no documents"):
        load(tiny)


def test_query_appearing_twice_with_different_texts(tiny: Path) -> None:
    with (tiny / "queries.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "q1", "text": "something else"}) + "\n")
    with pytest.raises(BeirFormatError, match="query 'q1' appears twice"):
        load(tiny)


@pytest.mark.parametrize(
    ("qrels", "error"),
    [
        ("", r"the first line must be the header .* got 'nothing'"),
        ("q1\td2\t1\n", r"the first line must be the header .* got 'q1 d2 1'"),
        ("query-id\tcorpus-id\tscore\n", "no judgments after the header"),
        ("query-id\tcorpus-id\tscore\nq1\td2\n", "line 2: expected 3 tab-separated fields"),
        ("query-id\tcorpus-id\tscore\nq1\td2\tyes\n", "line 2: score must be an integer"),
        (
            "query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\td2\t0\n",
            r"line 3: query 'q1' judges 'd2' twice \(1 and 0\)",
        ),
        (
            "query-id\tcorpus-id\tscore\nq9\td2\t1\n",
            r"query-id 'q9' has judgments but no text in queries\.jsonl",
        ),
        (
            "query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\tnope\t1\nq1\tnada\t1\n",
            r"query 'q1' judges corpus-id 'nada', which is not in .*corpus\.jsonl \(and 1 more\)",
        ),
    ],
)
def test_malformed_qrels(tiny: Path, qrels: str, error: str) -> None:
    write(tiny / "qrels" / "test.tsv", qrels)
    with pytest.raises(BeirFormatError, match=error):
        load(tiny)


def test_qrels_with_crlf_and_spaces(tiny: Path) -> None:
    write(tiny / "qrels" / "test.tsv", "query-id corpus-id score\r\nq1 d2 1\r\n\r\nq2\td4\t2\r\n")
    assert load(tiny).qrels == {"q1": {"d2": 1}, "q2": {"d4": 2}}


def test_corpus_digest_depends_on_content_not_order() -> None:
    a, b = Document("1", "t", "x"), Document("2", "", "y")
    assert corpus_digest([a, b]) == corpus_digest([b, a])
    assert corpus_digest([a, b]) != corpus_digest([a, Document("2", "", "y!")])
    assert corpus_digest([a]) != corpus_digest([Document("1", "tx", "")])
