"""``@app.task(pydantic=True)`` (Celery 5.5+): models validated in from dicts, a returned model
stored as JSON, with ``pydantic_strict``, ``pydantic_context`` and ``pydantic_dump_kwargs``.

Run eagerly, by a real pgq worker in this process (``start_worker``) and by the ``pgq worker``
command; the task module (annotations as strings: ``from __future__ import annotations``) is
written to a scratch folder that both this process and the worker import it from.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import psycopg
import pytest
from harness import WorkerProcess, task_row, wait_until_worker_registered, worker_env

pydantic = pytest.importorskip("pydantic")

from pgq.compat.exceptions import EncodeError  # noqa: E402
from pgq.compat.utils.serialization import UnpickleableExceptionWrapper  # noqa: E402
from pgq.contrib.testing.worker import start_worker  # noqa: E402

TASKS = """
from __future__ import annotations

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from pgq.compat import Celery

app = Celery("pydantic_shop")


class Order(BaseModel):
    sku: str
    qty: int

    @field_validator("sku")
    @classmethod
    def not_blocked(cls, sku: str, info: ValidationInfo) -> str:
        context = info.context or {}  # none where a caller builds an Order itself
        if context and not str(context.get("celery_task_name")).startswith("pydantic_shop."):
            raise ValueError(f"unexpected context {context}")
        if sku in context.get("blocked", ()):
            raise ValueError(f"{sku} is blocked")
        return sku


class Receipt(BaseModel):
    order_sku: str = Field(serialization_alias="orderSku")
    total_cents: int
    note: str | None = None


@app.task(
    pydantic=True,
    pydantic_context={"blocked": ["xx"]},
    pydantic_dump_kwargs={"by_alias": True, "exclude_none": True},
)
def checkout(order: Order, gift: Order | None = None) -> Receipt:
    assert isinstance(order, Order)
    assert gift is None or isinstance(gift, Order)
    extra = gift.qty * 100 if gift is not None else 0
    return Receipt(order_sku=order.sku, total_cents=order.qty * 250 + extra)


@app.task(pydantic=True, pydantic_strict=True, bind=True)
def strict_qty(self, order: Order) -> int:
    assert self.name == "pydantic_shop.strict_qty"
    return order.qty
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> Iterator[ModuleType]:
    folder = tmp_path_factory.mktemp("pydantic_shop")
    (folder / "pydantic_shop.py").write_text(textwrap.dedent(TASKS).lstrip())
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("pydantic_shop")
        module.app.database_url = db_url
        module.folder = folder
        yield module
        module.app.close()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("pydantic_shop", None)


def stored(db_url: str, task_id: str) -> dict[str, Any]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = task_row(conn, task_id)
    assert row is not None
    return row


# -- eager --------------------------------------------------------------------------------------


def test_eager_dicts_in_models_converted_and_the_model_out_as_json(shop: ModuleType) -> None:
    result = shop.checkout.apply(({"sku": "a1", "qty": "2"},))  # lax mode: "2" -> 2
    assert result.get() == {"orderSku": "a1", "total_cents": 500}  # dump kwargs applied
    gift = shop.checkout.apply(({"sku": "a1", "qty": 1},), {"gift": {"sku": "g", "qty": 3}})
    assert gift.get() == {"orderSku": "a1", "total_cents": 550}


def test_eager_models_passed_by_the_caller(shop: ModuleType) -> None:
    shop.app.conf.task_always_eager = True
    try:
        result = shop.checkout.delay(shop.Order(sku="b", qty=4), gift=None)
        assert result.get() == {"orderSku": "b", "total_cents": 1000}
    finally:
        shop.app.conf.task_always_eager = False


def test_eager_context_and_strict(shop: ModuleType) -> None:
    with pytest.raises(pydantic.ValidationError, match="xx is blocked"):
        shop.checkout.apply(({"sku": "xx", "qty": 1},), throw=True)
    with pytest.raises(pydantic.ValidationError, match="qty"):
        shop.strict_qty.apply(({"sku": "a", "qty": "2"},), throw=True)
    assert shop.strict_qty.apply(({"sku": "a", "qty": 2},)).get() == 2
    failed = shop.checkout.apply(({"sku": "a", "qty": "many"},))
    assert failed.state == "FAILURE"
    assert isinstance(failed.result, pydantic.ValidationError)


# -- a real worker ------------------------------------------------------------------------------


def test_worker_round_trip_and_what_is_stored(shop: ModuleType, db_url: str) -> None:
    with start_worker(shop.app, perform_ping_check=False):
        result = shop.checkout.delay(shop.Order(sku="c3", qty=2), shop.Order(sku="g", qty=1))
        assert result.get(timeout=30) == {"orderSku": "c3", "total_cents": 600}
        row = stored(db_url, result.id)
        # The models went as their JSON dumps; the returned model came back as JSON.
        assert row["args"] == [{"sku": "c3", "qty": 2}, {"sku": "g", "qty": 1}]
        assert row["result"] == {"orderSku": "c3", "total_cents": 600}
        assert shop.strict_qty.delay({"sku": "s", "qty": 7}).get(timeout=30) == 7


def test_a_model_the_task_would_not_rebuild_is_refused_at_delay(shop: ModuleType) -> None:
    # Its dump does not validate (a blocked sku): as in Celery, it is left to the encoder.
    with pytest.raises(EncodeError):
        shop.checkout.delay(shop.Order.model_construct(sku="xx", qty=1))


def test_worker_validation_error_fails_the_task_clearly(shop: ModuleType, db_url: str) -> None:
    with start_worker(shop.app, perform_ping_check=False):
        result = shop.checkout.delay({"sku": "d", "qty": "lots"})
        with pytest.raises(UnpickleableExceptionWrapper) as raised:
            result.get(timeout=30)
        assert result.state == "FAILURE"
        text = str(raised.value)
        assert "argument 'order' of pydantic_shop.checkout" in text
        assert "1 validation error for Order" in text and "qty" in text
        assert raised.value.exc_cls_name == "ValidationError"
        assert "ValidationError" in result.traceback
        assert stored(db_url, result.id)["state"] == "FAILURE"


def test_pgq_worker_command_round_trip(shop: ModuleType, db_url: str) -> None:
    env = worker_env(db_url)
    env["PYTHONPATH"] = os.pathsep.join([str(shop.folder), env["PYTHONPATH"]])
    worker = WorkerProcess(["worker", "-A", "pydantic_shop", "--pool", "solo"], env, shop.folder)
    try:
        wait_until_worker_registered(db_url, worker)
        ok = shop.checkout.delay({"sku": "e", "qty": 1})
        blocked = shop.checkout.delay({"sku": "xx", "qty": 1})
        assert ok.get(timeout=30) == {"orderSku": "e", "total_cents": 250}
        with pytest.raises(UnpickleableExceptionWrapper, match="xx is blocked"):
            blocked.get(timeout=30)
    finally:
        worker.stop()
