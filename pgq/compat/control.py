"""``app.control`` and ``app.control.inspect()``: Celery's remote control, from pgq's tables."""

from __future__ import annotations

import fnmatch
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pgq import serialization
from pgq.errors import TaskRevokedError
from pgq.store.admin import AdminStore, Filters
from pgq.store.control import ControlStore

if TYPE_CHECKING:
    from pgq.compat.app import Celery

__all__ = ["REVOKES_MAX", "REVOKE_EXPIRES", "Control", "Inspect"]


class Control:
    """``app.control``: revoking tasks, purging waiting ones, and ``inspect``/``ping``.

    Celery broadcasts these to the workers and gathers the replies for ``timeout`` seconds. pgq
    reads the answers from its tables instead: the workers' heartbeat rows (``pgq.workers``) and
    the task rows. Replies come at once, ``timeout`` is accepted and ignored, and a worker counts
    as live while its last heartbeat is younger than one lease (``PGQ_LEASE_SECONDS``), as for
    ``pgq inspect workers``.

    Commands that must run inside a worker (``rate_limit``, ``time_limit``, ``add_consumer``,
    ``cancel_consumer``, ``pool_grow``, ``pool_shrink``, ``autoscale``, custom commands, and
    ``inspect().conf()``/``clock()``/``report()``) go through ``broadcast``: a row in
    ``pgq.control_commands`` naming the live workers chosen, a NOTIFY that wakes them, and with
    ``reply=True`` their replies read from ``pgq.control_replies`` until each chosen worker
    answered or ``timeout`` passed. Like Celery's, what they change lasts for the life of the
    worker process: a restarted worker starts from its command line and app again.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def _admin(self) -> AdminStore:
        return AdminStore(self.app.db, live_seconds=self.app.settings.lease_seconds)

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Any = None,
        terminate: bool = False,
        signal: Any = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Revoke the tasks: a waiting or scheduled one never runs, a running one is terminated
        with ``terminate=True`` (else it runs to its end).

        The revocation is written to each task's row before anything else, so it holds whether
        or not a worker is running, and survives restarts. With ``reply=True`` (and
        ``timeout``, ``limit``, ``callback`` as for ``broadcast``), the live workers are also
        asked and their replies returned as Celery's: ``[{node_name: {"ok": "tasks {...}
        flagged as revoked"}}, ...]`` (``"terminate: <ids>"`` from a worker that was running
        one, with ``terminate``); without, None.

        As in Celery, a task whose state says it started elsewhere (STARTED or a custom state
        stored through the backend, no pgq worker holding it) keeps its state, and an id no
        task has yet reads REVOKED from then on (a task sent later with it is not run).
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        revoked = _revoked_result()
        for one in ids:
            self.app.AsyncResult(one).revoke(terminate=terminate, signal=signal)
            # An id no task has yet: recorded REVOKED, as a Celery worker records it.
            self.app.store.revoke_unknown(one, result=revoked)
        return self._tell_workers(
            "revoke",
            {"task_id": ids, "terminate": terminate, "signal": _signal_name(signal)},
            destination,
            kwargs,
        )

    def revoke_by_stamped_headers(
        self,
        headers: Mapping[str, Any] | Iterable[str],
        destination: Any = None,
        terminate: bool = False,
        signal: Any = None,
        connection: Any = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Revoke every task not finished yet whose stamps (``Signature.stamp``) match:
        ``{"name": value}`` or ``{"name": [value, ...]}`` (or Celery's ``["name=value"]``).

        A task matches when one of its stamps has one of the values given (a stamp that is a
        list, when one of its elements does), as in Celery. Each is revoked as ``revoke()``
        does, durably: a waiting or scheduled one never runs, a running one is terminated with
        ``terminate=True`` (else it runs to its end). Unlike Celery's workers, which also keep
        the stamps in memory and drop matching tasks they receive later (until they restart),
        tasks sent afterwards, including the later steps of a chain whose running step was
        not terminated, are not affected.

        With ``reply=True`` the live workers' replies are returned as Celery's
        (``[{node_name: {"ok": "headers {...} flagged as revoked, but not terminated"}}]``);
        without, None. With ``connection=``, the workers are not asked (they could not see
        the caller's uncommitted revocation).
        """
        wanted = _stamped_headers(headers)
        if wanted:
            ids = self.app.store.stamped_unfinished(json.dumps(wanted), connection=connection)
            for one in ids:
                self.app.AsyncResult(one).revoke(
                    connection=connection, terminate=terminate, signal=signal
                )
        if connection is not None:
            return [] if kwargs.get("reply") else None
        shown = headers if isinstance(headers, Mapping) else list(headers)
        return self._tell_workers(
            "revoke_by_stamped_headers",
            {"headers": shown, "terminate": terminate, "signal": _signal_name(signal)},
            destination,
            kwargs,
        )

    def _tell_workers(
        self,
        command: str,
        arguments: dict[str, Any],
        destination: Any,
        options: Mapping[str, Any],
    ) -> list[dict[str, Any]] | None:
        """Celery's replies to a revoke already written to the rows: asked of the live workers
        only with ``reply=True`` (nothing is left for them to do otherwise)."""
        if not options.get("reply"):
            return None
        return self.broadcast(
            command,
            arguments=arguments,
            destination=destination,
            reply=True,
            timeout=options.get("timeout", 1.0),
            limit=options.get("limit"),
            callback=options.get("callback"),
            pattern=options.get("pattern"),
            matcher=options.get("matcher"),
        )

    def terminate(
        self, task_id: str | Iterable[str], destination: Any = None, **kwargs: Any
    ) -> list[dict[str, Any]] | None:
        """``revoke(task_id, terminate=True)``."""
        return self.revoke(task_id, destination=destination, terminate=True, **kwargs)

    def shutdown(self, destination: str | Iterable[str] | None = None, **kwargs: Any) -> None:
        """Stop the chosen live workers (every one by default; ``destination``, ``pattern``,
        ``limit`` choose as for ``inspect``) as SIGTERM does: each finishes its running tasks
        and exits. Returns None, as Celery's broadcast without replies does."""
        admin = self._admin()
        chosen = self.inspect(destination, **kwargs)._workers(admin)
        admin.ask_to_shut_down([w["id"] for w in chosen])

    # pgq's flow control (Celery's cancel_consumer lives in one worker's memory; these are
    # durable and fleet-wide): see pgq.flow and docs/guides/flow-control.md.
    def pause_queue(self, *names: str, connection: Any = None) -> list[str]:
        """Pause queues on every worker until resumed; returns the queues this call paused."""
        return self.app.flow.pause_queue(*names, connection=connection)

    def resume_queue(self, *names: str, connection: Any = None) -> list[str]:
        """Resume paused queues (their workers wake at once); returns those that were paused."""
        return self.app.flow.resume_queue(*names, connection=connection)

    def breakers(self, name: str | None = None) -> list[dict[str, Any]]:
        """The circuit breakers, open ones first, with the tasks waiting behind each."""
        return self.app.flow.breakers(name)

    def open_breaker(self, name: str, connection: Any = None) -> dict[str, Any]:
        """Hold a task name's circuit breaker open until ``close_breaker``."""
        return self.app.flow.open_breaker(name, connection=connection)

    def close_breaker(self, name: str, connection: Any = None) -> dict[str, Any]:
        """Close a task name's circuit breaker."""
        return self.app.flow.close_breaker(name, connection=connection)

    def purge(self, connection: Any = None) -> int:
        """Delete every waiting task (PENDING or RETRY, in every queue); returns how many.

        Tasks a worker has claimed and finished tasks stay.
        """
        return self._admin().purge_waiting(None)

    discard_all = purge

    def inspect(
        self,
        destination: str | Iterable[str] | None = None,
        timeout: float = 1.0,
        callback: Any = None,
        connection: Any = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **kwargs: Any,
    ) -> Inspect:
        """What the live workers hold and serve, keyed by worker name (see ``Inspect``)."""
        return Inspect(
            self, destination, limit=limit, pattern=pattern, matcher=matcher, timeout=timeout
        )

    def ping(
        self, destination: str | Iterable[str] | None = None, timeout: float = 1.0, **kwargs: Any
    ) -> list[dict[str, dict[str, str]]]:
        """``[{worker_name: {"ok": "pong"}}, ...]``, one entry per live worker (none: ``[]``)."""
        replies = self.inspect(destination, **kwargs).ping() or {}
        return [{name: reply} for name, reply in replies.items()]

    # -- commands run inside the workers (pgq.worker.control), through broadcast --------------

    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        destination: str | Iterable[str] | None = None,
        connection: Any = None,
        reply: bool = False,
        timeout: float = 1.0,
        limit: int | None = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        channel: Any = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra_kwargs: Any,
    ) -> list[dict[str, Any]] | None:
        """Send ``command`` with ``arguments`` to the live workers ``destination`` names (node
        names or worker ids; all by default), ``pattern`` and ``matcher`` choose.

        With ``reply=True``, returns ``[{node_name: reply}, ...]`` as Celery does, gathered
        until every chosen worker replied, ``limit`` replies came, or ``timeout`` seconds
        passed (``callback`` is called with each as it comes); otherwise None. Arguments must
        be JSON (TypeError at the call otherwise).
        """
        arguments = dict(arguments or {}, **extra_kwargs)
        payload = json.loads(json.dumps(arguments))  # refused here, before anything is written
        admin = self._admin()
        chosen = Inspect(self, destination, pattern=pattern, matcher=matcher)._workers(admin)
        if not chosen:
            return [] if reply else None
        store = ControlStore(self.app.db)
        command_id = store.send(command, payload, [w["id"] for w in chosen], reply=reply)
        if not reply:
            return None
        node = {w["id"]: w["node"] for w in chosen}
        wanted = min(limit, len(chosen)) if limit else len(chosen)
        return store.gather(command_id, node, wanted=wanted, timeout=timeout, callback=callback)

    def rate_limit(
        self, task_name: str, rate_limit: Any, destination: Any = None, **kwargs: Any
    ) -> Any:
        """Set a task's rate limit in the chosen workers (per worker, until it restarts)."""
        return self.broadcast(
            "rate_limit",
            destination=destination,
            arguments={"task_name": task_name, "rate_limit": rate_limit},
            **kwargs,
        )

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Set a task's soft and hard time limits in the chosen workers (until they restart)."""
        return self.broadcast(
            "time_limit",
            arguments={"task_name": task_name, "hard": hard, "soft": soft},
            destination=destination,
            **kwargs,
        )

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        destination: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Make the chosen workers consume ``queue`` too (until they restart)."""
        return self.broadcast(
            "add_consumer",
            destination=destination,
            arguments=dict(
                {
                    "queue": queue,
                    "exchange": exchange,
                    "exchange_type": exchange_type,
                    "routing_key": routing_key,
                },
                **(options or {}),
            ),
            **kwargs,
        )

    def cancel_consumer(self, queue: str, destination: Any = None, **kwargs: Any) -> Any:
        """Make the chosen workers stop consuming ``queue`` (until they restart)."""
        return self.broadcast(
            "cancel_consumer", destination=destination, arguments={"queue": queue}, **kwargs
        )

    def pool_grow(self, n: int = 1, destination: Any = None, **kwargs: Any) -> Any:
        """Start ``n`` more pool processes in the chosen workers."""
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination, **kwargs)

    def pool_shrink(self, n: int = 1, destination: Any = None, **kwargs: Any) -> Any:
        """Stop ``n`` pool processes (idle ones first) in the chosen workers."""
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination, **kwargs)

    def autoscale(self, max: int, min: int, destination: Any = None, **kwargs: Any) -> Any:
        """New autoscale bounds for the chosen workers started with ``--autoscale``."""
        return self.broadcast(
            "autoscale", arguments={"max": max, "min": min}, destination=destination, **kwargs
        )


class Inspect:
    """``app.control.inspect()``: Celery's replies, built from pgq's tables.

    Each method returns ``{worker_name: reply}`` for the live workers chosen by ``destination``
    (worker names or host names: ``celery@host`` selects every worker of that host), ``pattern``
    (with ``matcher`` ``"glob"``, the default, or ``"pcre"``) and ``limit``; or None when no
    worker is live, as Celery returns None when nobody replies. Replies are keyed by node name
    (``-n``, ``celery@<host>`` by default); two live workers that share a node name (Celery warns
    of that) are each keyed by their unique id, ``<node name>/<pid>-<random>``, so that neither
    reply is lost.
    """

    def __init__(
        self,
        control: Control,
        destination: str | Iterable[str] | None = None,
        *,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.control = control
        self.destination = destination
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher
        self.timeout = timeout

    # -- which workers answer -----------------------------------------------------------------

    def _chosen(self, worker: Mapping[str, Any]) -> bool:
        names = {worker["id"], worker["hostname"]}
        if self.destination:
            wanted = (
                {self.destination} if isinstance(self.destination, str) else set(self.destination)
            )
            if not names & wanted:
                return False
        if self.pattern:
            if self.matcher == "pcre":
                return any(re.search(self.pattern, name) for name in names)
            return any(fnmatch.fnmatchcase(name, self.pattern) for name in names)
        return True

    def _workers(self, admin: AdminStore) -> list[dict[str, Any]]:
        chosen = [w for w in admin.workers(Filters()) if self._chosen(w)]
        chosen = chosen[: self.limit] if self.limit else chosen
        shared = Counter(w["hostname"] for w in chosen)
        for w in chosen:  # the key its replies go under
            w["node"] = w["hostname"] if shared[w["hostname"]] == 1 else w["id"]
        return chosen

    def _reply(self, build: Callable[[AdminStore, list[dict[str, Any]]], dict[str, Any]]) -> Any:
        admin = self.control._admin()
        workers = self._workers(admin)
        if not workers:
            return None
        node = {w["id"]: w["node"] for w in workers}
        return {node[key]: value for key, value in build(admin, workers).items()}

    # -- Celery's inspect commands --------------------------------------------------------------

    def ping(self, destination: str | Iterable[str] | None = None) -> dict[str, Any] | None:
        """``{worker_name: {"ok": "pong"}}`` for each live worker: its heartbeat is recent."""
        if destination:
            self.destination = destination
        return self._reply(lambda admin, workers: {w["id"]: {"ok": "pong"} for w in workers})

    def active(self, safe: bool | None = None) -> dict[str, list[dict[str, Any]]] | None:
        """The tasks each worker holds now (claimed tasks read STARTED in pgq).

        ``worker_pid`` is the worker's main process: the row does not record which pool process
        runs the task.
        """
        return self._reply(lambda admin, workers: _active(admin, workers, Filters(), safe))

    def scheduled(self, safe: bool | None = None) -> dict[str, list[dict[str, Any]]] | None:
        """Tasks waiting for their countdown/eta (or retry back-off), under each live worker
        that consumes their queue.

        In pgq such a task is a row no worker holds: whichever worker consuming its queue is
        free when it comes due runs it. So it is listed under every one of them (a task shows up
        once per such worker), in Celery's ``{"eta", "priority", "request"}`` shape.
        """
        return self._reply(lambda admin, workers: _scheduled(admin, workers, Filters(), safe))

    def query_task(self, *ids: str | Iterable[str]) -> dict[str, dict[str, list[Any]]] | None:
        """``{worker_name: {task_id: [state, info]}}`` for those of these tasks a worker holds
        (``"active"``) or that wait for their countdown in a queue it consumes (``"scheduled"``,
        under every such worker, as ``scheduled()`` lists them). Other ids are left out, as a
        Celery worker leaves out the ids it has not received. Ids may come one by one or as one
        list."""
        wanted = Filters(ids=tuple(_ids(ids)))

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            reply: dict[str, dict[str, list[Any]]] = {w["id"]: {} for w in workers}
            for worker, infos in _active(admin, workers, wanted, False).items():
                for info in infos:
                    reply[worker][info["id"]] = ["active", info]
            for worker, entries in _scheduled(admin, workers, wanted, False).items():
                for entry in entries:
                    reply[worker][entry["request"]["id"]] = ["scheduled", entry["request"]]
            return reply

        return self._reply(build)

    def revoked(self) -> dict[str, list[str]] | None:
        """``{worker_name: [task_id, ...]}``: the tasks revoked in the last 3 hours, newest
        first, at most 50,000 (what a Celery worker remembers: ``REVOKE_EXPIRES``,
        ``REVOKES_MAX``), tasks that expired included, as in Celery.

        A revocation in pgq is the task's row (``REVOKED``, or a running task marked to be
        skipped), honoured by every worker, so each live worker answers the same list.
        """

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            ids = admin.revoked(seconds=REVOKE_EXPIRES, limit=REVOKES_MAX)
            return {w["id"]: list(ids) for w in workers}

        return self._reply(build)

    def reserved(self, safe: bool | None = None) -> dict[str, list[dict[str, Any]]] | None:
        """``{worker_name: []}``: in pgq a claimed task is STARTED at once, so the tasks a
        worker has taken but not begun are listed by ``active()``."""
        return self._reply(lambda admin, workers: {w["id"]: [] for w in workers})

    def registered(self, *taskinfoitems: str) -> dict[str, list[str]] | None:
        """The task names each live worker registered, sorted, without Celery's built-in
        tasks (``celery.*``), as Celery's ``registered()`` leaves them out.

        Without ``taskinfoitems`` the names come from the workers' rows at once (bare names).
        With them (``registered("name", "rate_limit")``) the workers are asked, and each entry
        is Celery's ``"name [item=value ...]"`` from the task's attributes (those not None).
        """
        if taskinfoitems:
            return self._request("registered", taskinfoitems=list(taskinfoitems))

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            reply: dict[str, list[str]] = {w["id"]: [] for w in workers}
            for row in admin.registered(Filters()):
                if row["name"].startswith("celery."):
                    continue
                for worker_id in row["workers"]:
                    if worker_id in reply:
                        reply[worker_id].append(row["name"])
            return reply

        return self._reply(build)

    registered_tasks = registered

    def stats(self) -> dict[str, dict[str, Any]] | None:
        """What ``pgq.workers`` knows of each live worker, with Celery's ``pid`` and ``pool``
        (``pool["processes"]``: the pids of the pool processes, asked of each worker; the
        worker's own pid with ``--pool threads|solo``, where tasks run in it; left out for a
        worker that did not answer within ``timeout``).

        There is no per-task-name ``total``: the workers count the tasks they finished
        (``tasks_done``), not by name.
        """

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            return {w["id"]: _worker_stats(w) for w in workers}

        reply = self._reply(build)
        if not reply:
            return reply
        # The pool's processes live in the worker's memory only: each worker is asked.
        for node, own in (self._request("stats") or {}).items():
            if node in reply and isinstance(own, dict) and isinstance(own.get("pool"), dict):
                reply[node]["pool"]["processes"] = own["pool"].get("processes", [])
        return reply

    def active_queues(self) -> dict[str, list[dict[str, Any]]] | None:
        """The queues each live worker consumes, one ``{"name": queue, ...}`` per queue."""

        def build(admin: AdminStore, workers: list[dict[str, Any]]) -> dict[str, Any]:
            return {w["id"]: [_queue_info(q) for q in w["queues"]] for w in workers}

        return self._reply(build)

    # -- answered by the workers themselves (through Control.broadcast) -------------------------

    def _request(self, command: str, **kwargs: Any) -> dict[str, Any] | None:
        """Run an inspect command (a built-in one or one registered with ``inspect_command``)
        in the chosen workers: ``{node_name: reply}``, or None if none replied in time."""
        replies = self.control.broadcast(
            command,
            arguments=kwargs,
            destination=self.destination,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            pattern=self.pattern,
            matcher=self.matcher,
        )
        if not replies:
            return None
        return {name: body for one in replies for name, body in one.items()}

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        """Each worker's app configuration: the settings its app changed (all of them with
        ``with_defaults``), secrets masked (pgq's ``broker_url`` is the database URL)."""
        return self._request("conf", with_defaults=with_defaults)

    def clock(self) -> dict[str, Any] | None:
        """``{node_name: {"clock": N}}``: pgq's logical clock is the id of the command being
        answered (a sequence every broadcast advances), the same for every worker asked."""
        return self._request("clock")

    def report(self) -> dict[str, Any] | None:
        """``{node_name: {"ok": bugreport}}``: each worker's ``app.bugreport()``."""
        return self._request("report")


# The priority of Celery's timer entry for a countdown/eta task (celery.worker.strategy): the
# "priority" of each scheduled() entry; the task's own is its delivery_info's.
ETA_TIMER_PRIORITY = 6

# How long and how many revoked ids a Celery worker remembers (celery.worker.state).
REVOKE_EXPIRES = 10800.0
REVOKES_MAX = 50000


def _revoked_result() -> str:
    return serialization.dumps(serialization.exception_to_json(TaskRevokedError("revoked")))


def _signal_name(signal: Any) -> str | None:
    """A ``signal`` argument as text for the workers (a name, a number or a Signals member)."""
    if signal is None:
        return None
    return getattr(signal, "name", None) or str(signal)


def _stamped_headers(headers: Mapping[str, Any] | Iterable[str]) -> dict[str, list[Any]]:
    """``revoke_by_stamped_headers``' headers as ``{name: [value, ...]}``, checked."""
    if isinstance(headers, (str, bytes)) or not isinstance(headers, (Mapping, Iterable)):
        raise ValueError(
            f"stamped headers must be a dict or a list of 'name=value', got {headers!r:.60}"
        )
    if not isinstance(headers, Mapping):
        pairs: dict[str, Any] = {}
        for item in headers:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"stamped headers must be 'name=value', got {item!r:.60}")
            name, value = item.split("=", 1)
            pairs[name] = value
        headers = pairs
    wanted: dict[str, list[Any]] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            raise ValueError(f"a stamped header's name must be text, got {name!r:.60}")
        values = list(value) if isinstance(value, (list, tuple, set)) else [value]
        try:
            json.dumps(values)
        except (TypeError, ValueError):
            raise ValueError(
                f"stamped header {name!r} must have JSON values, got {value!r:.60}"
            ) from None
        wanted[name] = values
    return wanted


def _ids(given: Iterable[str | Iterable[str]]) -> list[str]:
    """Task ids passed one by one (``query_task(a, b)``) or as one list (``query_task([a, b])``)."""
    ids: list[str] = []
    for item in given:
        if isinstance(item, str):
            ids.append(item)
        else:
            ids.extend(map(str, item))
    return ids


def _active(
    admin: AdminStore, workers: list[dict[str, Any]], filters: Filters, safe: bool | None
) -> dict[str, list[dict[str, Any]]]:
    """``inspect().active()``'s reply for these workers: the tasks each holds."""
    reply: dict[str, list[dict[str, Any]]] = {w["id"]: [] for w in workers}
    rows = admin.active(filters)
    arguments = admin.arguments([row["id"] for row in rows])
    for row in rows:
        owner = _holder(row["worker"], workers)
        if owner is None or row["id"] not in arguments:
            continue  # held by a worker not asked, or finished and forgotten meanwhile
        info = _task_info(row, arguments[row["id"]], owner, bool(safe))
        info.update(
            time_start=row["started_at"].timestamp() if row["started_at"] else None,
            acknowledged=True,
            worker_pid=owner["pid"],
        )
        reply[owner["id"]].append(info)
    return reply


def _scheduled(
    admin: AdminStore, workers: list[dict[str, Any]], filters: Filters, safe: bool | None
) -> dict[str, list[dict[str, Any]]]:
    """``inspect().scheduled()``'s reply for these workers: each waiting task with a future
    ``run_at`` under every worker that consumes its queue."""
    reply: dict[str, list[dict[str, Any]]] = {w["id"]: [] for w in workers}
    rows = admin.scheduled(filters)
    arguments = admin.arguments([row["id"] for row in rows])
    for row in rows:
        if row["id"] not in arguments:
            continue  # purged or revoked and forgotten meanwhile
        for worker in workers:
            if row["queue"] not in worker["queues"]:
                continue
            request = _task_info(row, arguments[row["id"]], worker, bool(safe))
            request.update(time_start=None, acknowledged=False, worker_pid=None)
            reply[worker["id"]].append(
                {
                    "eta": row["run_at"].isoformat(),
                    "priority": ETA_TIMER_PRIORITY,
                    "request": request,
                }
            )
    return reply


def _holder(slot: str | None, workers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The worker whose pool slot (``<worker name>/<n>``) or self holds a task, if asked."""
    if not slot:
        return None
    for worker in workers:
        if slot == worker["id"] or slot.startswith(worker["id"] + "/"):
            return worker
    return None


def _task_info(
    row: Mapping[str, Any], arguments: Mapping[str, Any], worker: Mapping[str, Any], safe: bool
) -> dict[str, Any]:
    """Celery's description of one task (``Request.info()``) from its row."""
    args, kwargs = arguments["args"], arguments["kwargs"]
    return {
        "id": row["id"],
        "name": row["name"],
        "args": repr(args) if safe else args,
        "kwargs": repr(kwargs) if safe else kwargs,
        "type": row["name"],
        "hostname": worker["node"],
        "delivery_info": {
            "exchange": "",
            "routing_key": row["queue"],
            "priority": arguments["priority"],
            "redelivered": False,
        },
    }


def _worker_stats(worker: Mapping[str, Any]) -> dict[str, Any]:
    heartbeat = worker["last_heartbeat_at"]
    uptime = (heartbeat - worker["started_at"]).total_seconds() + worker["heartbeat_age_seconds"]
    return {
        "pid": worker["pid"],
        "hostname": worker["hostname"],
        "pool": {"implementation": worker["pool"], "max-concurrency": worker["concurrency"]},
        "uptime": int(uptime),
        "queues": list(worker["queues"]),
        "started_at": worker["started_at"].isoformat(),
        "last_heartbeat_at": heartbeat.isoformat(),
        "heartbeat_age_seconds": worker["heartbeat_age_seconds"],
        "tasks_done": int(worker["tasks_done"]),
        "running": int(worker["running"]),
        "broker": {"transport": "postgresql"},
    }


def _queue_info(queue: str) -> dict[str, Any]:
    """A queue as Celery's ``active_queues`` describes it (kombu's ``Queue.as_dict``): a
    durable queue bound to a direct exchange named after it, kombu's defaults elsewhere."""
    return {
        "name": queue,
        "routing_key": queue,
        "alias": None,
        "bindings": [],
        "binding_arguments": None,
        "consumer_arguments": None,
        "queue_arguments": None,
        "durable": True,
        "exclusive": False,
        "auto_delete": False,
        "no_ack": False,
        "no_declare": None,
        "expires": None,
        "message_ttl": None,
        "max_length": None,
        "max_length_bytes": None,
        "max_priority": None,
        "exchange": {
            "name": queue,
            "type": "direct",
            "arguments": None,
            "durable": True,
            "auto_delete": False,
            "delivery_mode": None,
            "no_declare": False,
            "passive": False,
        },
    }
