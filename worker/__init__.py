"""The worker half of autoembed: the Celery app (``autoembed.worker.app``), the
dispatcher and sweep, and the pipeline claim → read → chunk → embed → write.

Importing this package imports neither Celery nor torch; the model is loaded
on first use, once per process.
"""
