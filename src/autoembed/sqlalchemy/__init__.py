"""autoembed for SQLAlchemy 2.0: declare a vectorizer on a mapped class, map
its embeddings, and search as composable expressions (sync and async).

Importing this module imports neither torch nor Celery; embedding a query
text in-process loads the model on first use.
"""

from autoembed.sqlalchemy._declarative import Vectorizer
from autoembed.sqlalchemy._query import QueryEmbedding, aembed_query, embed_query
from autoembed.sqlalchemy._search import SearchHits
from autoembed.sqlalchemy._spec import VectorizerSpec, declared_specs

__all__ = [
    "QueryEmbedding",
    "SearchHits",
    "Vectorizer",
    "VectorizerSpec",
    "aembed_query",
    "declared_specs",
    "embed_query",
]
