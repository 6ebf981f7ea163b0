"""Testing a pgq (or Celery-written) project against a real worker and a real database.

- ``pgq.contrib.testing.worker``: ``start_worker(app)``, a real pgq worker in a thread of the
  test process (Celery's ``celery.contrib.testing.worker``);
- ``pgq.contrib.testing.app``: ``TestApp``, ``setup_default_app``, the app trap;
- ``pgq.contrib.testing.databases``: fresh migrated databases, cloned from a template;
- ``pgq.contrib.testing.tasks``: ``celery.ping``.

The pytest fixtures built on these are ``pgq.contrib.pytest``.
"""
