"""Fixtures of the ``pgq web`` tests (the JSON API, the pages, the browser tests).

``web_db``: the module's database (``db_url``) filled by really running things: a real
``pgq worker -A web_tasks`` (prefork, two slots) runs tasks to SUCCESS and FAILURE and keeps one
running; waiting, scheduled and revoked tasks are enqueued and revoked through pgq's own API;
a chain gives a family; a beat pass records the periodic entry. ``web_db.ids`` names a task in
each state. ``client``: a FastAPI TestClient on ``create_app(web_tasks.app)`` against it.

Tests that need FastAPI import it with ``pytest.importorskip`` (the ``web`` extra is optional),
so without it they skip instead of erroring; this file imports nothing of it at module level.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websupport import WebDatabase, start_web_worker

__all__ = ["browser", "client", "make_client", "web_db"]

CHROMIUM = os.environ.get("PGQ_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright, for the module (skips when either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)")
    playwright = sync_api.sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
    except Exception as exc:  # a browser that cannot start here: the tests cannot run
        playwright.stop()
        pytest.skip(f"chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
    yield launched
    launched.close()
    playwright.stop()


@pytest.fixture(scope="module")
def web_db(db_url: str) -> Iterator[WebDatabase]:
    """The module's database with tasks in every state, made by a real worker and pgq's API."""
    import web_tasks

    from pgq.compat import chain
    from pgq.maintenance.beat import Beat, BeatSettings

    app = web_tasks.app
    app.conf.broker_url = db_url
    worker = start_web_worker(db_url, "-c", "2")
    db = WebDatabase(db_url, worker, app)
    try:
        ids = db.ids
        ids["success"] = web_tasks.add.delay(2, 3).id
        ids["dead"] = web_tasks.fail.delay("boom").id
        ids["dead2"] = web_tasks.fail.delay("bang").id
        ids["dead_unknown"] = app.send_task("web_tasks.missing").id
        ids["scheduled"] = web_tasks.add.apply_async((1, 1), countdown=3600).id
        ids["waiting"] = web_tasks.add.apply_async((1, 2), queue="idle").id
        ids["revoked"] = web_tasks.add.apply_async((5, 5), countdown=3600).id
        app.AsyncResult(ids["revoked"]).revoke()
        result = chain(web_tasks.add.s(1, 2), web_tasks.add.s(10)).apply_async()
        ids["chain_last"] = result.id
        ids["chain_first"] = result.parent.id if result.parent else result.id
        for key in ("success", "chain_last"):
            db.wait(ids[key], "SUCCESS")
        for key in ("dead", "dead2", "dead_unknown"):
            db.wait(ids[key], "FAILURE")
        # Last, once the rest is done: a slot that claimed it with others would hold them.
        ids["running"] = web_tasks.sleepy.delay(300).id
        db.wait(ids["running"], "STARTED")
        beat = Beat(app, app.periodic_entries(), BeatSettings(scheduler="web_tasks"), app.tzinfo)
        try:
            beat.run_once()
        finally:
            beat.close()
        yield db
    finally:
        worker.kill()
        app.close()


@pytest.fixture(scope="module")
def make_client() -> Iterator[Callable[..., Any]]:
    """Build TestClients on ``create_app(...)``; each is closed after the module."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pgq.web import create_app

    clients: list[Any] = []

    def make(source: Any, *, raise_errors: bool = False, **options: Any) -> Any:
        client = TestClient(create_app(source, **options), raise_server_exceptions=raise_errors)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.app.state.dashboard.close()
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(web_db: WebDatabase, make_client: Callable[..., Any]) -> Any:
    """A TestClient on the dashboard of ``web_db`` (no auth, actions allowed)."""
    return make_client(web_db.app)
