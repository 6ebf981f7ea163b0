"""Which of Celery's integration tests pgq is not held to, and why.

``EXCLUDED``: tests that cannot apply to pgq: they read Celery's in-process worker memory or a
specific transport's internals. Each entry says which.

``KNOWN_FAILING``: tests that pass on Celery and fail on pgq because pgq lacks an API or behaves
differently. They are pgq's gaps, not exclusions: the suite holds pgq to this baseline (no new
failure), and a test leaves the list as soon as it passes.

Test ids are ``<file>::<class>::<test name>`` as the JUnit report names them.
"""

from __future__ import annotations

EXCLUDED: dict[str, str] = {}

KNOWN_FAILING: dict[str, str] = {}
