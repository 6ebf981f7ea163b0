"""Least privilege (issue 17): `pgq migrate --roles`, and a worker and a producer that run under
the roles it grants. Roles are server-wide: every role here has a per-run prefix and is
dropped at the end."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from harness import (
    HERE,
    WorkerProcess,
    pgq_command,
    wait_for,
    wait_state,
    wait_until_worker_registered,
)
from harness import worker_env as base_env
from psycopg import sql

from pgq.store.roles import RoleNames, relations_in_code

pytestmark = pytest.mark.e2e


def as_user(url: str, user: str) -> str:
    """``url`` with another login (trust authentication on the test server needs no password)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


class Roles:
    def __init__(self, prefix: str, db_url: str) -> None:
        self.prefix = prefix
        self.names = RoleNames.from_prefix(prefix)
        self.db_url = db_url
        self.logins = {kind: f"{prefix}_{kind}_login" for kind in ("owner", "worker", "producer")}
        self.logins["nobody"] = f"{prefix}_nobody"

    def url(self, kind: str) -> str:
        return as_user(self.db_url, self.logins[kind])

    def all(self) -> list[str]:
        return [self.names.owner, self.names.worker, self.names.producer, *self.logins.values()]


def pgq(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = base_env(url)
    return subprocess.run(
        [*pgq_command(), *args], cwd=str(HERE), env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def roles(server_url: str, db_url: str) -> Iterator[Roles]:
    r = Roles(f"t{uuid.uuid4().hex[:10]}", db_url)
    done = pgq("migrate", "--roles", "--role-prefix", r.prefix, url=db_url)
    assert done.returncode == 0, done.stderr
    try:
        with psycopg.connect(server_url, autocommit=True) as c:
            for kind in ("owner", "worker", "producer"):
                group = getattr(r.names, kind)
                c.execute(
                    sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                        sql.Identifier(r.logins[kind]), sql.Identifier(group)
                    )
                )
            c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(r.logins["nobody"])))
        with psycopg.connect(db_url, autocommit=True) as c:
            # The e2e tasks record side effects in a test table outside pgq's schema.
            c.execute(
                sql.SQL("GRANT SELECT, INSERT ON side_effects TO {}").format(
                    sql.Identifier(r.names.worker)
                )
            )
            c.execute(
                sql.SQL("GRANT USAGE ON SEQUENCE side_effects_seq_seq TO {}").format(
                    sql.Identifier(r.names.worker)
                )
            )
        yield r
    finally:
        everyone = sql.SQL(", ").join(sql.Identifier(n) for n in r.all())
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute(
                sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE usename = ANY(%s)"), (r.all(),)
            )  # fmt: skip
            c.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(everyone))
            for name in r.all():  # one at a time: several at once trips over default ACLs
                c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        with psycopg.connect(server_url, autocommit=True) as c:
            for name in reversed(r.all()):
                c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_the_grants_cover_every_object_the_schema_has(db_url: str) -> None:
    with psycopg.connect(db_url) as c:
        rows = c.execute(
            "SELECT c.relname, c.relkind FROM pg_class AS c WHERE c.relnamespace ="
            " 'pgq'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm', 'S')"
        ).fetchall()
    assert sorted(rows) == sorted(relations_in_code())


def test_migrate_roles_gives_each_role_exactly_its_privileges(roles: Roles, db_url: str) -> None:
    n = roles.names
    again = pgq("migrate", "--roles", "--role-prefix", roles.prefix, url=db_url)
    assert again.returncode == 0, again.stderr  # running it twice is harmless
    with psycopg.connect(db_url) as c:

        def privileges(role: str, table: str) -> set[str]:
            found = set()
            for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                row = c.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, p))
                if row.fetchone()[0]:  # type: ignore[index]
                    found.add(p)
            return found

        owners = c.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'pgq'::regnamespace"
            " UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'pgq'"
        ).fetchall()
        assert owners == [(n.owner,)]
        rw = {"SELECT", "INSERT", "UPDATE", "DELETE"}
        for table in ("tasks", "workers", "beat_entries", "beat_leases", "rate_limits"):
            assert privileges(n.worker, f"pgq.{table}") == rw
        assert privileges(n.worker, "pgq.alembic_version") == {"SELECT"}
        assert privileges(n.worker, "pgq.queue_stats") >= {"SELECT"}
        assert privileges(n.producer, "pgq.tasks") == {"SELECT", "INSERT", "DELETE"}
        assert privileges(n.producer, "pgq.alembic_version") == {"SELECT"}
        for table in ("workers", "beat_entries", "beat_leases", "rate_limits", "queue_stats"):
            assert privileges(n.producer, f"pgq.{table}") == set()
        column = c.execute(
            "SELECT has_column_privilege(%s, 'pgq.tasks', 'state', 'UPDATE'),"
            " has_column_privilege(%s, 'pgq.tasks', 'name', 'UPDATE')",
            (n.producer, n.producer),
        ).fetchone()
        assert column == (True, False)


def test_a_worker_and_a_producer_run_tasks_under_their_roles(roles: Roles, conn: Any) -> None:
    from pgq.compat import Celery

    conn.execute("TRUNCATE pgq.tasks, pgq.workers, side_effects")
    w = WorkerProcess(["worker", "-A", "e2e_tasks", "-c", "2"], base_env(roles.url("worker")))
    producer = Celery("producer", broker=roles.url("producer"))
    try:
        wait_until_worker_registered(roles.db_url, w)
        assert producer.send_task("e2e_tasks.add", (2, 3)).get(timeout=30) == 5
        recorded = producer.send_task("e2e_tasks.record", ("as-worker",))
        assert recorded.get(timeout=30) == "as-worker"
        # enqueue with an idempotency key twice, and in the caller's transaction
        first = producer.send_task("e2e_tasks.add", (1, 1), idempotency_key=roles.prefix)
        again = producer.send_task("e2e_tasks.add", (1, 1), idempotency_key=roles.prefix)
        assert first.id == again.id and first.get(timeout=30) == 2
        with psycopg.connect(roles.url("producer")) as mine:
            inside = producer.send_task("e2e_tasks.add", (4, 4), connection=mine)
        assert inside.get(timeout=30) == 8
        # a group (saved and restored) and a chord
        from pgq.compat import chord, group
        from pgq.compat.result import GroupResult

        adds = [producer.signature("e2e_tasks.add", args=(i, i)) for i in range(3)]
        parts = group(adds).apply_async()
        assert parts.get(timeout=30) == [0, 2, 4]
        parts.save()
        restored = GroupResult.restore(parts.id, app=producer)
        assert restored is not None and restored.get(timeout=30) == [0, 2, 4]
        total = chord(adds)(producer.signature("e2e_tasks.tsum"))
        assert total.get(timeout=30) == 6
        # a DAG workflow (submitted, read, results passed by name) and one revoked whole
        from pgq.compat import dag
        from pgq.dag import signature

        flow = dag(
            {
                "x": signature("e2e_tasks.add", [1, 1]),
                "y": (signature("e2e_tasks.dag_sum", [], {"extra": 1}), ["x"], True),
            },
            app=producer,
        ).apply_async()
        assert flow.get(timeout=30) == {"x": 2, "y": 3}
        held = dag(
            {
                "p": signature("e2e_tasks.add", [1, 1], countdown=600),
                "q": (signature("e2e_tasks.add", [2, 2]), ["p"]),
            },
            app=producer,
        ).apply_async()
        held.revoke()
        assert held.states() == {"p": "REVOKED", "q": "REVOKED"}
        # revoke a task that waits, forget a result
        later = producer.send_task("e2e_tasks.add", (1, 2), countdown=600)
        later.revoke()
        assert wait_state(conn, later.id, "REVOKED")["state"] == "REVOKED"
        first.forget()
        assert conn.execute("SELECT 1 FROM pgq.tasks WHERE id = %s", (first.id,)).fetchone() is None
        # the task really ran as the worker's login
        who = conn.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name = 'pgq'"
            " AND datname = current_database() AND usename <> current_user"
        ).fetchall()
        assert (roles.logins["worker"],) in who
    finally:
        producer.close()
        code = w.stop()
    assert code == 0, w.output
    assert "Traceback" not in w.output, w.output


def test_a_worker_with_embedded_beat_runs_under_the_worker_role(roles: Roles, conn: Any) -> None:
    conn.execute("TRUNCATE pgq.tasks, pgq.workers, pgq.beat_leases, pgq.beat_entries, side_effects")
    w = WorkerProcess(["worker", "-A", "beat_app", "-B", "-c", "1"], base_env(roles.url("worker")))
    try:
        wait_until_worker_registered(roles.db_url, w)

        def ran_twice() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM side_effects WHERE key = 'every-second'"
            ).fetchone()
            return bool(row and row[0] >= 2)

        wait_for(ran_twice, 30, 0.1, "beat's every-second task to run twice")
    finally:
        code = w.stop()
    assert code == 0, w.output
    assert "permission denied" not in w.output, w.output


@pytest.mark.parametrize(
    "command",
    [
        ("inspect", "queues", "--json"),
        ("inspect", "workers", "--json"),
        ("inspect", "dead", "--json"),
        ("inspect", "stats", "--json"),
        ("health",),
        ("purge", "--yes"),
        ("retry", "--dead"),
    ],
)
def test_operator_commands_run_under_the_worker_role(
    roles: Roles, command: tuple[str, ...]
) -> None:
    done = pgq(*command, url=roles.url("worker"))
    assert done.returncode == 0, done.stderr
    assert "permission denied" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE pgq.tasks",
        "ALTER TABLE pgq.tasks ADD COLUMN x int",
        "TRUNCATE pgq.tasks",
        "UPDATE pgq.tasks SET name = 'x'",
        "DELETE FROM pgq.workers",
        "CREATE TABLE pgq.mine (x int)",
        "UPDATE pgq.alembic_version SET version_num = '0001'",
    ],
)
def test_the_producer_cannot_change_what_it_does_not_need(roles: Roles, statement: str) -> None:
    with (
        psycopg.connect(roles.url("producer")) as c,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        c.execute(statement)


@pytest.mark.parametrize(
    "statement",
    ["DROP TABLE pgq.tasks", "TRUNCATE pgq.tasks", "CREATE TABLE pgq.mine (x int)",
     "UPDATE pgq.alembic_version SET version_num = '0001'"],
)  # fmt: skip
def test_the_worker_cannot_change_the_schema(roles: Roles, statement: str) -> None:
    with (
        psycopg.connect(roles.url("worker")) as c,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        c.execute(statement)


@pytest.mark.parametrize("kind", ["worker", "producer", "nobody"])
def test_migrate_without_ddl_rights_says_so_in_one_line(roles: Roles, kind: str) -> None:
    done = pgq("migrate", "--role-prefix", roles.prefix, url=roles.url(kind))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "lacks the privilege to alter pgq's schema" in lines[0]
    assert roles.logins[kind] in lines[0]
    assert "current transaction is aborted" not in done.stderr


def test_migrate_on_an_empty_database_without_create_says_so(
    roles: Roles, empty_db_url: str
) -> None:
    url = as_user(empty_db_url, roles.logins["nobody"])
    done = pgq("migrate", url=url)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "lacks the privilege to create pgq's schema" in done.stderr


def test_a_member_of_the_owner_role_migrates_down_and_up(roles: Roles, conn: Any) -> None:
    """Migrations run as the owner role: what they create belongs to it and reaches workers."""
    from pgq.server.migrate import downgrade

    url = roles.url("owner")
    downgrade(url, revision="0002", roles=roles.names)
    assert conn.execute("SELECT to_regclass('pgq.rate_limits')").fetchone() == (None,)
    done = pgq("migrate", "--role-prefix", roles.prefix, url=url)
    assert done.returncode == 0, done.stderr
    rows = conn.execute(
        "SELECT relname::text, pg_get_userbyid(relowner)::text,"
        " has_table_privilege(%s, oid, 'INSERT'), has_table_privilege(%s, oid, 'INSERT')"
        " FROM pg_class WHERE relnamespace = 'pgq'::regnamespace"
        " AND relname IN ('rate_limits', 'beat_entries', 'beat_leases') ORDER BY 1",
        (roles.names.worker, roles.names.producer),
    ).fetchall()
    assert rows == [
        (name, roles.names.owner, True, False)
        for name in ("beat_entries", "beat_leases", "rate_limits")
    ]


def test_migrate_roles_sql_prints_the_grants() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pgq.cli", "migrate", "--sql", "--roles", "--role-prefix", "demo"],
        cwd=str(HERE), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "CREATE TABLE pgq.tasks" in out
    assert 'CREATE ROLE "demo_owner" NOLOGIN' in out
    assert 'ALTER TABLE pgq."tasks" OWNER TO "demo_owner"' in out
    assert 'GRANT SELECT, INSERT, DELETE ON pgq.tasks TO "demo_producer"' in out
    assert out.index("CREATE TABLE pgq.tasks") < out.index('CREATE ROLE "demo_owner"')


def test_the_role_prefix_is_checked() -> None:
    with pytest.raises(ValueError):
        RoleNames.from_prefix('x"; DROP TABLE pgq.tasks; --')


def test_a_database_owner_with_createrole_sets_up_the_roles(
    server_url: str, empty_db_url: str
) -> None:
    """Not a superuser: the database's owner with CREATEROLE migrates and creates the roles."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    dba = f"{prefix}_dba"
    names = RoleNames.from_prefix(prefix)
    created = [dba, names.owner, names.worker, names.producer]
    dbname = urlsplit(empty_db_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(dba)))
        c.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(dbname), sql.Identifier(dba)
            )
        )
    try:
        done = pgq("migrate", "--roles", "--role-prefix", prefix, url=as_user(empty_db_url, dba))
        assert done.returncode == 0, done.stderr
        with psycopg.connect(empty_db_url) as c:
            owners = c.execute(
                "SELECT DISTINCT pg_get_userbyid(relowner)::text FROM pg_class"
                " WHERE relnamespace = 'pgq'::regnamespace"
            ).fetchall()
            assert owners == [(names.owner,)]
            assert c.execute(
                "SELECT has_table_privilege(%s, 'pgq.tasks', 'UPDATE')", (names.worker,)
            ).fetchone() == (True,)
        again = pgq("migrate", "--roles", "--role-prefix", prefix, url=as_user(empty_db_url, dba))
        assert again.returncode == 0, again.stderr
    finally:
        with psycopg.connect(empty_db_url, autocommit=True) as c:
            c.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(dbname))
            )
            for name in created:
                c.execute(
                    sql.SQL("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {})"
                            " THEN REASSIGN OWNED BY {} TO CURRENT_USER; DROP OWNED BY {};"
                            " END IF; END $$").format(
                        sql.Literal(name), sql.Identifier(name), sql.Identifier(name)
                    )
                )  # fmt: skip
        with psycopg.connect(server_url, autocommit=True) as c:
            for name in reversed(created):
                c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
