"""Optional integrations that sit on top of pgq (test fixtures, tracing, error tracking)."""
