"""The task detail page of a DAG workflow node (pgq.Workflow) shows the workflow's graph: every
node, links to the nodes it runs after, each node's state (Starlette's TestClient in process,
a real worker running part of the workflow)."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402 - after the skips

from pgq import dag  # noqa: E402
from pgq.dag import signature  # noqa: E402
from pgq.web import create_app  # noqa: E402


def test_a_node_s_detail_page_shows_the_workflow_graph(
    app: Any, conn: Any, clean: None, start_worker: Any
) -> None:
    conn.execute("TRUNCATE pgq.workflows")
    start_worker("-c", "1")
    result = dag(
        {
            "a": signature("e2e_tasks.add", [1, 2]),
            "b": (signature("e2e_tasks.add", [3, 4]), ["a"]),
            # Held behind a root scheduled an hour from now: the page shows it waiting.
            "late": signature("e2e_tasks.add", [5, 6], countdown=3600),
            "c": (signature("e2e_tasks.add", [7, 8]), ["b", "late"]),
        },
        name="page",
        app=app,
    ).apply_async()
    ids = result.task_ids()
    app.result(ids["b"]).get(timeout=30)
    with TestClient(create_app(app)) as client:
        page = client.get(f"/tasks/{ids['c']}")
        assert page.status_code == 200, page.text
        html = page.text
    table = re.search(r'<table id="task-dag" data-workflow-id="([^"]+)">(.*?)</table>', html, re.S)
    assert table and table.group(1) == result.id
    rows = re.findall(r'<tr data-node="([^"]+)" data-state="([A-Z]+)"', table.group(2))
    assert rows == [("a", "SUCCESS"), ("b", "SUCCESS"), ("late", "PENDING"), ("c", "PENDING")]
    c_row = re.search(r'<tr data-node="c".*?</tr>', table.group(2), re.S)
    assert c_row
    # Its dependencies link to their tasks' pages; it waits on one of them still.
    assert f'href="/tasks/{ids["b"]}">b</a>' in c_row.group(0)
    assert f'href="/tasks/{ids["late"]}">late</a>' in c_row.group(0)
    assert '<td class="num">1</td>' in c_row.group(0)
    assert 'class="current-task"' in c_row.group(0)
    assert "fail_fast" in html
