# pgq with its dashboard, for docker-compose.yml (PostgreSQL, migrate, two workers, beat, pgq web).
# Everything is installed here, at build time: a container starts the pgq command and nothing else.
# Not built on the CI machine (no Docker engine runs there): tests/unit/test_docker_files.py
# reads this file and checks what it can.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# What the wheel is built from (pyproject.toml names README.md; migrations/ ships inside it as
# pgq/_migrations), then the example tasks that the compose file's workers and beat run.
COPY pyproject.toml README.md ./
COPY pgq ./pgq
COPY migrations ./migrations
RUN pip install '.[web]'
COPY examples ./examples

# A user of its own: nothing in the container runs as root.
RUN useradd --system --uid 10001 --no-create-home --home-dir /app pgq
USER pgq

# Exit 0 when the database answers and its schema is current (PGQ_DATABASE_URL must be set).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 CMD ["pgq", "health"]

EXPOSE 5555
CMD ["pgq", "worker", "-A", "examples.tasks", "-l", "info"]
