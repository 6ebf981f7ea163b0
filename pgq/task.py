"""A task type: its options (Celery's names and defaults), its hooks, and how one call of it
becomes the row to insert (``Task.prepare``: each option checked once, at enqueue).

Tasks are made and registered by ``pgq.App`` (``@app.task``); ``pgq.compat`` builds Celery's
``Task`` on this class.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from pgq import options as rules
from pgq import serialization
from pgq.concurrency import limit_for
from pgq.context import current_connection
from pgq.errors import InvalidOption
from pgq.hooks import emit, listening
from pgq.ids import new_task_id
from pgq.result import Result
from pgq.store import Like, NewTask

if TYPE_CHECKING:
    from pgq.app import App

__all__ = ["Task", "after_publish", "before_publish"]


class Task:
    """A task type. Subclass and define ``run``, or decorate a function with ``App.task``.

    Class attributes are the task's options, with Celery's names and defaults.
    """

    name: ClassVar[str | None] = None
    app: App
    queue: str | None = None
    priority: int | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | timedelta | datetime | None = None
    ignore_result: bool = False
    typing: bool = True
    # Celery's rate_limit ('10/s', '100/m', '1000/h'), enforced across all workers by the
    # database (pgq/ratelimit.py); None means unlimited.
    rate_limit: str | None = None
    # How many tasks of one concurrency_key may run at once when a call names a key and neither
    # the call nor the settings' prefixes give a limit (pgq/concurrency.py); None: no default.
    concurrency_limit: int | None = None
    # A circuit breaker for this task name, {"failures": 5, "window": 60, "cooldown": 30}
    # (pgq/flow.py); None takes PGQ_CIRCUIT_BREAKER's default, False has none.
    circuit_breaker: Any = None
    # Run each call in a transaction on a connection of the task database that also records the
    # task's success (pgq/worker/transactional.py): its writes there commit with its SUCCESS,
    # or not at all. The task reaches it as ``self.connection`` / ``pgq.current_connection()``.
    transactional: bool = False

    @property
    def connection(self) -> Any:
        """A transactional task's psycopg connection, inside its run's transaction
        (``pgq.current_connection()``); ``NoTransaction`` anywhere else."""
        return current_connection()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"task {self.name!r} has no run()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    # Hooks the worker calls around each run (Celery's names and arguments).
    def before_start(self, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Called in the worker just before ``run``."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called in the worker after ``run`` returned."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker when the task ended in FAILURE."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker when the task is going to be retried."""

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Called in the worker after every run, whatever its outcome."""

    def check_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise TypeError if ``run`` cannot take these arguments (when ``typing`` is on)."""
        if not self.typing:
            return
        signature = self._signature
        if signature is None:
            return
        if not kwargs:  # the common delay(x, y) call: an arity check is enough
            low, high = self._positional_arity
            if low <= len(args) and (high is None or len(args) <= high):
                return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    @functools.cached_property
    def is_async(self) -> bool:
        """Whether ``run`` is an ``async def``: the worker runs it on its event loop."""
        return inspect.iscoroutinefunction(self.run)

    @functools.cached_property
    def _signature(self) -> inspect.Signature | None:
        # Computed once per task: inspect.signature costs more than the rest of an enqueue.
        try:
            return inspect.signature(self.run)
        except (TypeError, ValueError):  # builtins without a signature
            return None

    @functools.cached_property
    def _positional_arity(self) -> tuple[int, int | None]:
        """(required, maximum or None) positional arguments ``run`` takes, when a call with
        only positional arguments in that range always binds; (inf, 0) forces a full bind."""
        signature = self._signature
        if signature is None:
            return 0, None
        low, high = 0, 0
        for p in signature.parameters.values():
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                high = -1
            elif p.kind in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            ):
                if p.default is inspect.Parameter.empty:
                    low += 1
                if high != -1:
                    high += 1
            elif p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
                return 10**9, 0  # a required keyword: only bind() can tell
        return low, (None if high == -1 else high)

    def delay(self, *args: Any, **kwargs: Any) -> Result:
        """Enqueue with positional and keyword arguments."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        using: str | None = None,
        **options: Any,
    ) -> Result:
        """Enqueue with options (``countdown``, ``eta``, ``expires``, ``queue``, ``priority``,
        ``task_id``, ``idempotency_key``, ``idempotency_ttl``, ``concurrency_key``,
        ``concurrency_limit``, ``time_limit``, ``soft_time_limit``, ``connection``...).

        ``using`` names the Django database alias whose open transaction takes the task
        (pgq.django; default: Django's default database).
        """
        new = self._outgoing(args, kwargs, options)
        return self._sent(new, *self.app.store.insert(new, connection, using))

    async def adelay(self, *args: Any, **kwargs: Any) -> Result:
        """``delay`` for async code: the insert does not block the event loop."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> Result:
        """``apply_async`` for async code, with the same options. ``connection`` takes a psycopg
        ``AsyncConnection`` or a SQLAlchemy ``AsyncConnection``/``AsyncSession``: the task is
        inserted in its open transaction (rolled back: it never existed)."""
        new = self._outgoing(args, kwargs, options)
        return self._sent(new, *await self.app.store.ainsert(new, connection))

    def _outgoing(
        self, args: Sequence[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any]
    ) -> NewTask:
        """The row one call inserts, through the before_task_publish hook."""
        new = self.prepare(args, kwargs, **options)
        if listening("before_task_publish") or listening("after_task_publish"):
            new = before_publish(new)
        return new

    def _sent(self, new: NewTask, task_id: str, created: bool) -> Result:
        """After the insert: the hooks, and the result handle."""
        if created:
            emit("task_enqueued", task_id=task_id, name=new.name, queue=new.queue)
        if listening("after_task_publish"):
            after_publish(new)
        return self.app.result(task_id)

    def prepare(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | timedelta | datetime | None = None,
        task_id: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | timedelta | None = None,
        parent_id: str | None = None,
        root_id: str | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        check: bool = True,
        **options: Any,
    ) -> NewTask:
        """Validate and encode one call into the row to insert (nothing is written).

        ``check=False`` skips the signature check (workflow steps built by the worker).
        A bad option raises ``ValueError`` naming it (the rules: ``pgq.options``); arguments
        JSON cannot hold raise ``EncodeError``.
        """
        args = list(args or ())
        kwargs = dict(kwargs or {})
        if check:
            self.check_arguments(args, kwargs)
        name = rules.check_name(self.name)
        if self.time_limit is not None:
            options.setdefault("time_limit", self.time_limit)
        if self.soft_time_limit is not None:
            options.setdefault("soft_time_limit", self.soft_time_limit)
        if options:
            options = {k: v for k, v in options.items() if v is not None}
            rules.call_options(options)
        if countdown is not None:
            countdown = rules.check_countdown(countdown)
        if eta is not None:
            eta = _aware(rules.check_eta(eta))
        expires = self.expires if expires is None else expires
        if expires is not None:
            expires = rules.check_expires(expires)
        expires_at, expires_in = _split_expiry(expires)
        if eta is not None or countdown is not None or expires is not None:
            # The running task's request.eta / request.expires (ISO 8601 text, as in Celery).
            now = datetime.now(timezone.utc)
            if eta is not None or countdown is not None:
                options["eta"] = (eta or now + timedelta(seconds=countdown or 0)).isoformat()
            if expires is not None:
                due = expires_at or now + timedelta(seconds=expires_in or 0)
                options["expires"] = due.isoformat()
        if priority is None:
            priority = self.priority if self.priority is not None else 0
        priority = rules.check_priority(priority)
        if queue is None:
            queue = self.queue or self.app.default_queue
        ttl: float | None = None
        if idempotency_key is not None:
            idempotency_key = rules.check_key(idempotency_key)
            if idempotency_ttl is None:
                idempotency_ttl = self.app.settings.idempotency_ttl
            if idempotency_ttl is not None:
                ttl = rules.check_idempotency_ttl(idempotency_ttl)
        elif idempotency_ttl is not None:
            raise InvalidOption("idempotency_ttl needs an idempotency_key (it is the key's window)")
        if concurrency_key is not None:
            concurrency_key, concurrency_limit = limit_for(
                concurrency_key,
                concurrency_limit,
                self.app.concurrency_limits,
                self.concurrency_limit,
            )
        elif concurrency_limit is not None:
            raise InvalidOption(f"concurrency_limit={concurrency_limit!r} needs a concurrency_key")
        if parent_id is not None:
            parent_id = rules.check_id(parent_id, "parent_id")
        if root_id is not None:
            root_id = rules.check_id(root_id, "root_id")
        return NewTask(
            id=rules.check_id(task_id) if task_id else new_task_id(),
            name=name,
            args=serialization.dumps(args) if args else "[]",
            kwargs=serialization.dumps(kwargs) if kwargs else "{}",
            options=serialization.dumps(options) if options else "{}",
            queue=rules.check_queue(queue),
            priority=priority,
            eta=eta,
            countdown=countdown,
            expires_at=expires_at,
            expires_in=expires_in,
            idempotency_key=idempotency_key,
            parent_id=parent_id,
            root_id=root_id or parent_id,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
            idempotency_ttl=ttl,
        )

    def prepare_like(
        self,
        template: NewTask,
        args: Sequence[Any] | None,
        kwargs: dict[str, Any] | None,
        task_id: str,
    ) -> Like:
        """``prepare(args, kwargs, task_id=task_id)`` for a call without options, given
        ``template``, this task's ``prepare()``: only the id and the arguments differ (a
        batch's hot path), so the row is a ``Like`` of the template."""
        args = args or ()
        kwargs = kwargs or {}
        self.check_arguments(args, kwargs)
        return (
            task_id,
            template,
            serialization.dumps(args) if args else "[]",
            serialization.dumps(kwargs) if kwargs else "{}",
        )


def _aware(moment: datetime | None) -> datetime | None:
    """Naive datetimes mean UTC (Celery's default timezone)."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def _split_expiry(
    expires: float | timedelta | datetime | None,
) -> tuple[datetime | None, float | None]:
    if expires is None:
        return None, None
    if isinstance(expires, datetime):
        return _aware(expires), None
    if isinstance(expires, timedelta):
        return None, expires.total_seconds()
    return None, float(expires)  # checked: a finite number


def before_publish(row: NewTask) -> NewTask:
    """Send ``before_task_publish`` for a row about to be inserted; the row to insert instead.

    Receivers get the row and its custom headers (``options["headers"]``) as a dict they may
    change: what the dict holds after them is what the row stores (and what the worker's
    ``request`` shows). A receiver that makes the headers unencodable raises ``EncodeError``
    here, before anything is written.
    """
    options = serialization.loads(row.options)
    before = options.get("headers") or {}
    headers = dict(before)
    emit("before_task_publish", row=row, headers=headers)
    if headers == before:
        return row
    options["headers"] = headers
    return row._replace(options=serialization.dumps(options))


def after_publish(row: NewTask) -> None:
    """Send ``after_task_publish`` for a row just inserted (or found already there)."""
    if listening("after_task_publish"):
        headers = serialization.loads(row.options).get("headers") or {}
        emit("after_task_publish", row=row, headers=headers)
