"""Transactional enqueue on Django's connection: inside ``transaction.atomic()`` a task is part of
the transaction (rolled back: it never existed; committed: it runs, and the workers are woken by
the insert's NOTIFY), its id known at once; outside ``atomic()`` it commits at once, as before."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.usefixtures("clean")


class Rollback(Exception):
    pass


def _row(pg: psycopg.Connection[Any], task_id: str) -> Any:
    return pg.execute("SELECT state, name FROM pgq.tasks WHERE id = %s", (task_id,)).fetchone()


def test_inside_atomic_the_task_is_part_of_the_transaction(pg) -> None:
    from django.db import transaction
    from shop.models import Order
    from shop.tasks import confirm_order

    with transaction.atomic():
        order = Order.objects.create(customer="ann", total="1.00")
        result = confirm_order.delay(order.pk)
        # The id is known before the commit, and nobody else sees the task yet.
        assert result.id
        assert _row(pg, result.id) is None
    assert _row(pg, result.id) == ("PENDING", "shop.tasks.confirm_order")


def test_rollback_leaves_no_task(pg) -> None:
    from django.db import transaction
    from shop.models import Order
    from shop.tasks import confirm_order

    with pytest.raises(Rollback), transaction.atomic():
        order = Order.objects.create(customer="bob", total="2.00")
        result = confirm_order.apply_async((order.pk,), countdown=0)
        raise Rollback
    assert _row(pg, result.id) is None
    assert pg.execute("SELECT count(*) FROM pgq.tasks").fetchone() == (0,)
    assert not Order.objects.exists()


def test_a_rolled_back_savepoint_takes_its_task_with_it(pg) -> None:
    from django.db import transaction
    from djtest.tasks import mark

    with transaction.atomic():
        kept = mark.delay("kept")
        with pytest.raises(Rollback), transaction.atomic():
            dropped = mark.delay("dropped")
            raise Rollback
    assert _row(pg, kept.id) is not None
    assert _row(pg, dropped.id) is None


def test_a_workflow_inside_atomic_rolls_back_too(pg) -> None:
    from django.db import transaction
    from djtest.tasks import mark

    from pgq.compat import chain

    with pytest.raises(Rollback), transaction.atomic():
        chain(mark.si("a"), mark.si("b")).apply_async()
        raise Rollback
    assert pg.execute("SELECT count(*) FROM pgq.tasks").fetchone() == (0,)


def test_commit_notifies_the_workers(pg, django_db_url: str) -> None:
    from django.db import transaction
    from djtest.tasks import mark

    with psycopg.connect(django_db_url, autocommit=True) as listener:
        listener.execute("LISTEN pgq_tasks")
        with transaction.atomic():
            mark.delay("wake")
            # Nothing is delivered while the transaction is open...
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        # ...and the insert's NOTIFY is, once it commits (what wakes a waiting worker).
        got = list(listener.notifies(timeout=10, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [("pgq_tasks", mark.app.default_queue)]


def test_outside_atomic_the_task_commits_at_once(pg) -> None:
    from djtest.tasks import mark

    result = mark.delay("now")
    assert _row(pg, result.id) == ("PENDING", "djtest.tasks.mark")


def test_the_feature_can_be_turned_off(pg) -> None:
    from django.db import transaction
    from django.test import override_settings
    from djtest.tasks import mark

    with (
        override_settings(PGQ={"TRANSACTIONAL": False}),
        pytest.raises(Rollback),
        transaction.atomic(),
    ):
        result = mark.delay("off")
        assert _row(pg, result.id) is not None  # committed on pgq's own connection already
        raise Rollback
    assert _row(pg, result.id) is not None


def test_using_picks_the_alias_whose_transaction_takes_the_task(pg) -> None:
    from django.db import transaction
    from djtest.tasks import mark

    # "other" is a second connection to the same database: its transaction, not default's.
    with pytest.raises(Rollback), transaction.atomic(using="other"):
        joined = mark.apply_async(("joined",), using="other")
        not_joined = mark.delay("default is not in a transaction")
        assert _row(pg, joined.id) is None
        assert _row(pg, not_joined.id) is not None
        raise Rollback
    assert _row(pg, joined.id) is None
    assert _row(pg, not_joined.id) is not None


def test_an_orm_write_and_its_task_commit_together(pg) -> None:
    from django.db import transaction
    from shop.models import Order
    from shop.tasks import place_order

    order = place_order("cid", "3.00")
    row = _row(pg, order.task_id)
    assert row == ("PENDING", "shop.tasks.confirm_order")
    assert Order.objects.get(pk=order.pk).task_id == order.task_id
    with transaction.atomic():
        pass  # nothing left open


def test_a_broken_transaction_refuses_the_task(pg) -> None:
    from django.db import IntegrityError, transaction
    from django.db.transaction import TransactionManagementError
    from djtest.tasks import mark
    from shop.models import Order

    with pytest.raises(TransactionManagementError), transaction.atomic():
        order = Order.objects.create(customer="dan", total="4.00")
        with pytest.raises(IntegrityError):
            Order.objects.create(id=order.pk, customer="dup", total="4.00")  # no savepoint
        mark.delay("after an error")
    assert pg.execute("SELECT count(*) FROM pgq.tasks").fetchone() == (0,)


def test_another_database_is_never_written_to(
    pg, django_urls: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """``elsewhere`` is another database (with a pgq schema of its own): a task is never
    inserted there. Named with using=, the enqueue is refused; as the default alias, pgq falls
    back to its own database (committed at once) and warns."""
    from django.db import transaction
    from django.test import override_settings
    from djtest.tasks import mark

    from pgq.errors import ConfigurationError

    with transaction.atomic(using="elsewhere"):
        with pytest.raises(ConfigurationError, match="not pgq's database"):
            mark.apply_async(("refused",), using="elsewhere")
        with override_settings(PGQ={"DATABASE": "elsewhere"}), caplog.at_level(logging.WARNING):
            fell_back = mark.delay("fell back")
    assert _row(pg, fell_back.id) is not None
    assert "is not pgq's database" in caplog.text
    with psycopg.connect(django_urls["elsewhere"], autocommit=True) as other:
        assert other.execute("SELECT count(*) FROM pgq.tasks").fetchone() == (0,)


def test_a_non_postgresql_alias(pg) -> None:
    """SQLite cannot hold pgq's tasks: using= it inside atomic() is refused, nothing written;
    the system check warns when it is the alias tasks would join."""
    from django.db import transaction
    from django.test import override_settings
    from djtest.tasks import mark

    from pgq.django.apps import check_database
    from pgq.errors import ConfigurationError

    with (
        transaction.atomic(using="lite"),
        pytest.raises(ConfigurationError, match="sqlite, not PostgreSQL"),
    ):
        mark.apply_async(("refused",), using="lite")
    assert pg.execute("SELECT count(*) FROM pgq.tasks").fetchone() == (0,)
    # (Other Celery apps the rest of the suite made in this process may add their own W002.)
    assert [m.msg for m in check_database() if "app 'proj'" in m.msg] == []
    with override_settings(PGQ={"DATABASE": "lite"}):
        assert [m.id for m in check_database()] == ["pgq.W001"]
    with override_settings(PGQ={"DATABASE": "elsewhere"}):  # not the broker's database
        assert [m.id for m in check_database() if "app 'proj'" in m.msg] == ["pgq.W002"]
    with override_settings(PGQ={"DATABASE": "nope"}):
        assert [m.id for m in check_database()] == ["pgq.E001"]


@pytest.mark.e2e
def test_a_worker_runs_the_committed_task_and_never_the_rolled_back_one(pg, start_worker) -> None:
    from django.db import transaction
    from harness import wait_state
    from shop.models import Order
    from shop.tasks import confirm_order, place_order

    start_worker("-c", "1")
    with pytest.raises(Rollback), transaction.atomic():
        lost = Order.objects.create(customer="lost", total="1.00")
        lost_id = confirm_order.delay(lost.pk).id
        raise Rollback
    kept = place_order("kept", "2.00")  # committed after the rolled-back one was sent
    assert wait_state(pg, kept.task_id, "SUCCESS")["result"] == "confirmed"
    kept.refresh_from_db()
    assert kept.status == "confirmed"  # written by the task, through the ORM, in the worker
    assert _row(pg, lost_id) is None
    assert list(Order.objects.values_list("customer", flat=True)) == ["kept"]


@pytest.mark.parametrize(
    ("entry", "url", "same"),
    [
        ({"NAME": "shop", "HOST": "localhost"}, "postgresql://127.0.0.1/shop", True),
        ({"NAME": "shop", "HOST": "/run/postgresql"}, "postgres://u@localhost:5432/shop", True),
        ({"NAME": "shop", "HOST": "", "PORT": "5432"}, "postgresql:///shop", True),
        ({"NAME": "shop", "HOST": "db1"}, "postgresql://db2/shop", False),
        ({"NAME": "shop", "HOST": "db1", "PORT": "6432"}, "postgresql://db1/shop", False),
        ({"NAME": "shop"}, "postgresql://localhost/shop2", False),
        ({"NAME": "shop"}, "postgresql://localhost/shop?pgq_pooler=transaction", True),
        ({"NAME": "shop", "OPTIONS": {"service": "main"}}, "postgresql://localhost/shop", False),
    ],
)
def test_which_databases_are_pgqs(entry: dict[str, Any], url: str, same: bool) -> None:
    from pgq.django.db import same_database

    assert same_database(entry, url) is same
