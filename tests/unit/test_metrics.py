"""nDCG@10, Recall@100 and MRR@10 against values worked out by hand (trec_eval's
definitions: linear gain, log2(rank + 1) discount, ideal from every relevant
judged document)."""

from __future__ import annotations

import math

import pytest

from autoembed.evaluation.metrics import (
    Scores,
    mean,
    ndcg,
    percentile,
    recall,
    reciprocal_rank,
    score,
)

LOG2_3 = math.log2(3)  # the discount at rank 2


def test_binary_relevance_at_rank_two() -> None:
    ranking = ["a", "b", "c"]
    judged = {"b": 1}
    assert ndcg(ranking, judged) == pytest.approx(1 / LOG2_3)  # 0.6309
    assert reciprocal_rank(ranking, judged) == 0.5
    assert recall(ranking, judged) == 1.0


def test_graded_relevance() -> None:
    # DCG = 2/log2(3) + 1/log2(4) = 1.76186; the ideal ranking c(3), a(2), b(1):
    # IDCG = 3/1 + 2/log2(3) + 1/2 = 4.76186; c is judged but not retrieved.
    ranking = ["x", "a", "b"]
    judged = {"a": 2, "b": 1, "c": 3}
    assert ndcg(ranking, judged) == pytest.approx(0.369994, abs=1e-6)
    assert reciprocal_rank(ranking, judged) == 0.5
    assert recall(ranking, judged) == pytest.approx(2 / 3)


def test_gain_is_the_grade_not_two_to_the_grade() -> None:
    # (1 + 3/log2 3) / (3 + 1/log2 3) = 0.79671; with gains 2^g - 1 it would be 0.7098.
    assert ndcg(["b", "a"], {"a": 3, "b": 1}) == pytest.approx(0.796708, abs=1e-6)


def test_perfect_ranking_scores_one() -> None:
    judged = {"a": 3, "b": 2, "c": 1, "d": 0}
    assert score(["a", "b", "c", "d"], judged) == Scores(1.0, 1.0, 1.0)


def test_no_relevant_documents() -> None:
    for judged in ({}, {"a": 0}, {"a": -1}):
        assert score(["a", "b"], judged) == Scores(0.0, 0.0, 0.0)


def test_nothing_retrieved() -> None:
    assert score([], {"a": 1}) == Scores(0.0, 0.0, 0.0)


def test_fewer_results_than_k() -> None:
    # one of 12 relevant documents found, at rank 1: DCG 1, IDCG = sum of the
    # first ten discounts 1/log2(i + 1) = 4.543559
    judged = {f"d{i}": 1 for i in range(12)}
    assert ndcg(["d0"], judged) == pytest.approx(0.220092, abs=1e-6)
    assert recall(["d0"], judged) == pytest.approx(1 / 12)
    assert reciprocal_rank(["d0"], judged) == 1.0


def test_cutoffs() -> None:
    ten_misses = [f"x{i}" for i in range(10)]
    at_11 = [*ten_misses, "a"]
    assert ndcg(at_11, {"a": 1}) == 0.0
    assert reciprocal_rank(at_11, {"a": 1}) == 0.0
    assert recall(at_11, {"a": 1}) == 1.0
    at_101 = [f"x{i}" for i in range(100)] + ["a"]
    assert recall(at_101, {"a": 1}) == 0.0
    assert recall(at_101[1:], {"a": 1}) == 1.0  # now at rank 100


def test_ties_in_grade_and_order() -> None:
    # equally relevant documents: either order is ideal
    assert ndcg(["a", "b"], {"a": 1, "b": 1}) == 1.0
    assert ndcg(["b", "a"], {"a": 1, "b": 1}) == 1.0
    # the ranking's order decides, whatever the documents' ids
    assert reciprocal_rank(["z", "a"], {"a": 1}) == 0.5
    assert reciprocal_rank(["a", "z"], {"a": 1}) == 1.0


def test_a_document_listed_twice_counts_once() -> None:
    assert ndcg(["a", "a", "a"], {"a": 1, "b": 1}) == pytest.approx(1 / (1 + 1 / LOG2_3))
    # b moves up to rank 2 once the repeat is dropped
    assert reciprocal_rank(["x", "x", "b"], {"b": 1}) == 0.5


def test_negative_grades_are_not_relevant_and_not_penalized() -> None:
    assert ndcg(["a", "b"], {"a": -1, "b": 1}) == pytest.approx(1 / LOG2_3)
    assert reciprocal_rank(["a", "b"], {"a": -1, "b": 1}) == 0.5
    assert recall(["a"], {"a": -1, "b": 1}) == 0.0


def test_mean_over_queries() -> None:
    m = mean([Scores(1.0, 0.5, 1.0), Scores(0.0, 1.0, 0.5)])
    assert m == Scores(0.5, 0.75, 0.75)
    assert mean([]) == Scores(0.0, 0.0, 0.0)


def test_percentile_interpolates_linearly() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert math.isnan(percentile([], 50))
