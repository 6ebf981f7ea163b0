"""Celery's ``broker_pool_acquire_timeout``: how long a producer waits for a free connection of
its process's pool (pgq's pool stands for Celery's producer pool)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pgq.compat import Celery
from pgq.errors import ConfigurationError, PoolExhausted


@pytest.fixture
def app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.setenv("PGQ_POOL_SIZE", "1")
    application = Celery("acquire", broker=db_url)
    yield application
    application.close()


def test_the_setting_is_the_wait_for_a_free_connection(app: Any) -> None:
    assert app.conf.broker_pool_acquire_timeout is None  # Celery's default
    app.conf.broker_pool_acquire_timeout = 0.25
    db = app.db
    # The one connection is in use: the next borrower gives up after the setting's wait.
    with db.pooled(), pytest.raises(PoolExhausted, match=r"stayed in use for 0\.25s"), db.pooled():
        pass
    # A change takes effect on the running app.
    app.conf.broker_pool_acquire_timeout = 0.5
    with db.pooled(), pytest.raises(PoolExhausted, match=r"stayed in use for 0\.5s"), db.pooled():
        pass
    # Tasks are sent as usual with it set.
    assert app.send_task("acquire.nothing").id
    # None: the pool's own wait (PGQ_CONNECT_TIMEOUT).
    app.conf.broker_pool_acquire_timeout = None
    assert db.acquire_timeout is None


def test_a_setting_from_config_applies_to_a_new_database(app: Any) -> None:
    app.config_from_object({"broker_pool_acquire_timeout": 3})
    assert app.db.acquire_timeout == 3.0


@pytest.mark.parametrize("value", ["soon", -1, True])
def test_a_bad_value_is_refused(app: Any, value: Any) -> None:
    app.conf.broker_pool_acquire_timeout = value
    with pytest.raises(ConfigurationError, match="broker_pool_acquire_timeout"):
        app.db  # noqa: B018 - the database is where the setting is read
