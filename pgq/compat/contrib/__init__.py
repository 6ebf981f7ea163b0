"""Celery's ``celery.contrib`` names after the import swap: ``pgq.compat.contrib.pytest`` (the
fixtures) and ``pgq.compat.contrib.testing`` (``start_worker``, ``TestApp``). The code lives in
``pgq.contrib``."""
