"""autoembed: PostgreSQL keeps its own embeddings.

Importing autoembed imports neither torch nor Celery.
"""

from autoembed.install import install
from autoembed.search import Hit, search
from autoembed.settings import Settings

__all__ = ["Hit", "Settings", "install", "search"]
__version__ = "0.3.0"
