"""Optional integrations on top of pgq (test fixtures, tracing, error tracking); each module
needs its extra (see pyproject.toml)."""
