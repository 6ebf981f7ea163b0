"""The Django admin's tasks list on a large table (issue 20): page times through Django's client.

    python -m bench.django_admin                        # 500,000 rows, 15 requests per page
    python -m bench.django_admin --rows 100000 --requests 5

A scratch database (``pgqbench_django_admin`` on ``--server-url``) gets Django's tables and pgq's
schema through ``manage.py migrate`` (the ``pgq.django`` app), then ``--rows`` tasks (mixed
states, 8 queues, 40 names, spread over a week, UUIDv7-like ids as pgq makes them) written by
``INSERT ... SELECT generate_series`` and ``VACUUM ANALYZE``d. Django's test client, logged in as
a superuser, requests each changelist page ``--requests`` times after two warm-ups; the median
and the slowest are printed, in milliseconds, with the SQL statements each page ran. The database
is dropped at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import psycopg
from psycopg import sql

NAME = "pgqbench_django_admin"
FILL = """
WITH r AS (
    SELECT g, random() AS r1, random() AS r2,
           now() - make_interval(secs => (%(rows)s - g)::float8 * 604800 / %(rows)s) AS created,
           md5(g::text) AS h
    FROM generate_series(1, %(rows)s) AS g
), s AS (
    SELECT r.*,
           CASE WHEN r2 < 0.92 THEN 'SUCCESS' WHEN r2 < 0.97 THEN 'FAILURE' ELSE 'REVOKED' END
               AS state,
           lpad(to_hex(floor(extract(epoch FROM created) * 1000)::bigint), 12, '0') AS t
    FROM r
)
INSERT INTO pgq.tasks (id, name, queue, state, run_at, args, result, created_at, started_at,
                       finished_at, worker)
SELECT substr(t, 1, 8) || '-' || substr(t, 9, 4) || '-7' || substr(h, 1, 3) || '-8'
           || substr(h, 4, 3) || '-' || substr(h, 7, 12),
       'app' || (g %% 8) || '.tasks.job_' || floor(r1 * 40)::int, 'queue-' || (g %% 8), state,
       created, jsonb_build_array(g), jsonb_build_object('ok', true), created, created,
       created + interval '1 second', 'bench@host'
FROM s
"""

PAGES = {
    "page 1 (unfiltered)": {},
    "page 200 (unfiltered)": {"p": "200"},
    "state = FAILURE": {"state": "FAILURE"},
    "queue = queue-3": {"queue": "queue-3"},
    "search by id": None,  # filled in with a real id
}


def _with_dbname(url: str, name: str) -> str:
    """``url`` (a postgresql:// URL) naming database ``name`` instead."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _settings(url: str) -> None:
    from django.conf import settings

    from pgq.django.db import database_settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "pgq.django",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        ROOT_URLCONF=__name__,
        DATABASES={"default": database_settings(url)},
        USE_TZ=True,
    )


urlpatterns: list[Any] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    url = _with_dbname(args.server_url, NAME)
    with psycopg.connect(args.server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NAME)))
    try:
        os.environ["PGQ_DATABASE_URL"] = url
        _settings(url)
        import django
        from django.contrib import admin
        from django.core.management import call_command
        from django.urls import path

        django.setup()
        urlpatterns.append(path("admin/", admin.site.urls))
        call_command("migrate", verbosity=0)
        started = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL, {"rows": args.rows})
            conn.execute("VACUUM ANALYZE pgq.tasks")
            some_id = conn.execute("SELECT id FROM pgq.tasks LIMIT 1 OFFSET 1000").fetchone()[0]
        print(f"{args.rows} rows written in {time.monotonic() - started:.1f} s")
        _measure(args.requests, some_id)
    finally:
        if not args.keep:
            from django.conf import settings

            if settings.configured:
                from django.db import connections

                connections.close_all()
            with psycopg.connect(args.server_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
                )
    return 0


def _measure(requests: int, some_id: str) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "pw")
    client = Client()
    client.force_login(user)
    print(f"{'page':<24} {'median ms':>10} {'max ms':>8} {'queries':>8}")
    for label, params in PAGES.items():
        query = {"q": some_id} if params is None else params
        for _ in range(2):
            assert client.get("/admin/pgq/pgqtask/", query).status_code == 200
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            with CaptureQueriesContext(connection) as captured:
                response = client.get("/admin/pgq/pgqtask/", query)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
        print(
            f"{label:<24} {statistics.median(times):>10.1f} {max(times):>8.1f} "
            f"{len(captured.captured_queries):>8}"
        )
        if os.environ.get("PGQ_BENCH_SHOW_SQL"):
            for q in captured.captured_queries:
                print(f"    {q['time']}s {q['sql'][:160]}")


if __name__ == "__main__":
    sys.exit(main())
