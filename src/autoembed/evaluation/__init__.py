"""Retrieval quality on BEIR-format test collections (``autoembed evaluate``).

- ``beir``: load and validate a collection;
- ``metrics``: nDCG@10, Recall@100, MRR@10 (trec_eval's definitions);
- ``store``: put it in a table and embed it with the worker's code;
- ``runner``: run the queries through the SQL search functions, timed;
- ``report``: the table and the JSON document;
- ``command``: all of it, as the CLI runs it.
"""

from autoembed.evaluation.beir import BeirFormatError, Collection, load
from autoembed.evaluation.command import Options, evaluate
from autoembed.evaluation.runner import Method, MethodResult, embed_queries, run_method
from autoembed.evaluation.store import EvaluationError

__all__ = [
    "BeirFormatError",
    "Collection",
    "EvaluationError",
    "Method",
    "MethodResult",
    "Options",
    "embed_queries",
    "evaluate",
    "load",
    "run_method",
]
