"""Optional integrations with other tools; each module needs its extra (see pyproject.toml)."""
