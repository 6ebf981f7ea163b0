"""Tasks written the way Celery's documentation writes them; nothing here knows about pgq."""

import os
import time
from pathlib import Path

from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from celery.signals import task_failure, task_revoked, task_success
from celery.utils.log import get_task_logger
from proj.celery import app

logger = get_task_logger(__name__)


class PaymentDeclined(Exception):
    """A domain error the caller must see as itself through result.get()."""


def _wait_for_file(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.02)


def _note(directory, name, text):
    # Written aside and renamed, so a reader never sees the file before its text.
    if directory:
        partial = Path(directory, f".{name}.partial")
        partial.write_text(text)
        os.replace(partial, Path(directory, name))


@shared_task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value


@app.task(bind=True)
def whoami(self):
    return {
        "id": self.request.id,
        "task": self.request.task,
        "retries": self.request.retries,
        "is_eager": bool(self.request.is_eager),
        "name": self.name,
    }


@app.task(bind=True)
def how_called(self):
    return [self.request.id, bool(self.request.called_directly)]


@app.task
def fail(message):
    raise ValueError(message)


@app.task
def decline(card):
    raise PaymentDeclined(f"card {card} declined")


@app.task(bind=True, max_retries=5)
def retry_until(self, succeed_on):
    if self.request.retries < succeed_on:
        raise self.retry(countdown=0.1)
    return self.request.retries


@app.task(bind=True, max_retries=2)
def always_retry(self):
    raise self.retry(countdown=0.1)


@app.task(bind=True, max_retries=1)
def retry_with_exc(self, card):
    try:
        raise PaymentDeclined(f"card {card} declined")
    except PaymentDeclined as exc:
        raise self.retry(exc=exc, countdown=0.1) from exc


def _own_state(task):
    """What the task's own result says while it runs: the state, and the keys of its info
    (a dict) or the class name of its error (RETRY)."""
    result = task.AsyncResult(task.request.id)
    info = result.info
    if isinstance(info, BaseException):
        info = type(info).__name__
    elif isinstance(info, dict):
        info = sorted(info)
    return [result.state, info]


@app.task(bind=True)
def own_state(self):
    return _own_state(self)


@app.task(bind=True, track_started=True)
def own_state_tracked(self):
    return _own_state(self)


@app.task(bind=True, max_retries=1)
def own_state_after_retry(self):
    if self.request.retries == 0:
        raise self.retry(exc=PaymentDeclined("not yet"), countdown=0.1)
    return _own_state(self)


@app.task(bind=True, max_retries=3)
def retry_with_new_args(self, n, step=1):
    if self.request.retries == 0:
        raise self.retry(args=(n + 10,), kwargs={"step": 5}, countdown=0.1)
    return [n, step, self.request.retries, self.request.args, self.request.kwargs]


@app.task(bind=True, max_retries=3)
def retry_elsewhere(self):
    if self.request.retries == 0:
        raise self.retry(queue="moved", countdown=0.1)
    return [self.request.delivery_info["routing_key"], self.request.retries]


@app.task(bind=True, max_retries=3)
def retry_with_expiry(self, expires=None):
    if self.request.retries == 0:
        options = {} if expires is None else {"expires": expires}
        raise self.retry(countdown=0.1, **options)
    return self.request.expires


@app.task(bind=True)
def when(self):
    return {"eta": self.request.eta, "expires": self.request.expires}


@shared_task(
    bind=True,
    autoretry_for=(ConnectionError,),
    retry_backoff=True,
    retry_backoff_max=1,
    retry_jitter=False,
    max_retries=3,
)
def flaky(self, failures):
    if self.request.retries < failures:
        raise ConnectionError(f"attempt {self.request.retries} failed")
    return self.request.retries


@shared_task(
    autoretry_for=(ConnectionError,),
    retry_kwargs={"max_retries": 1, "countdown": 0.1},
)
def hopeless():
    raise ConnectionError("never works")


@app.task(bind=True)
def progress(self, flag_path):
    self.update_state(state="PROGRESS", meta={"current": 1, "total": 2})
    _wait_for_file(flag_path)
    return "done"


@app.task(bind=True)
def ignored(self):
    self.update_state(state="CUSTOM_END", meta={"why": "ignored"})
    raise Ignore()


@app.task(soft_time_limit=1, time_limit=20)
def soft_limited():
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "not interrupted"


@app.task
def waits_on_subtask():
    return add.delay(1, 1).get(timeout=10)


@app.task
def routed():
    return "routed"


class AuditedTask(Task):
    """A base class with hooks, as in Celery's "Custom task classes"."""

    def on_success(self, retval, task_id, args, kwargs):
        _note(kwargs.get("audit_dir"), f"success-{task_id}", repr(retval))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        _note(kwargs.get("audit_dir"), f"failure-{task_id}", type(exc).__name__)


@app.task(base=AuditedTask)
def audited(value, audit_dir=None):
    if value < 0:
        raise ValueError("negative")
    return value * 2


class Multiply(app.Task):
    name = "proj.tasks.multiply"

    def run(self, x, y):
        return x * y


multiply = app.register_task(Multiply())


@task_success.connect(sender=audited)
def _audited_succeeded(sender=None, result=None, **kwargs):
    name = f"signal-success-{sender.name}-{sender.request.id}"
    _note(os.environ.get("KIT_SIGNAL_DIR"), name, repr(result))


@task_failure.connect
def _any_failure(sender=None, task_id=None, exception=None, **kwargs):
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        f"signal-failure-{task_id}",
        f"{sender.name} {type(exception).__name__}",
    )


@task_revoked.connect
def _any_revoked(sender=None, request=None, terminated=None, expired=None, **kwargs):
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        f"signal-revoked-{request.id}",
        f"terminated={terminated} expired={expired}",
    )


@shared_task
def tsum(numbers):
    return sum(numbers)


@app.task
def on_error(request, exc, traceback):
    """An errback as Celery's documentation writes it (runs in the worker)."""
    _note(os.environ.get("KIT_SIGNAL_DIR"), f"errback-{request.id}", type(exc).__name__)


@app.task
def counted_errback(request, exc, traceback):
    """An errback that leaves one note per call (errback-call-<request id>-<n>), to count them."""
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        f"errback-call-{request.id}-{os.urandom(6).hex()}",
        type(exc).__name__,
    )


@shared_task
def record(value, name):
    """A callback that leaves a note (its name) holding the value it got, for the kit to read."""
    _note(os.environ.get("KIT_SIGNAL_DIR"), name, repr(value))
    return value


@shared_task(bind=True)
def ids(self, i):
    """Where this task sits in its workflow (Celery's integration suite has the same task)."""
    return [self.request.root_id, self.request.parent_id, i]


@shared_task(bind=True)
def collect_ids(self, results, i):
    return [results, [self.request.root_id, self.request.parent_id, i]]


@app.task
def old_style_errback(task_id, label):
    """An old-style errback with a stored argument: called with the failed task's id first."""
    _note(os.environ.get("KIT_SIGNAL_DIR"), f"old-errback-{label}", task_id)


@app.task
def errback_with_kwargs(request, exc, traceback, label=None):
    """A new-style errback whose signature stores a keyword argument."""
    _note(os.environ.get("KIT_SIGNAL_DIR"), f"kw-errback-{label}", type(exc).__name__)


@app.task(bind=True, max_retries=3)
def retry_swapping_arguments(self, n, step=None):
    """Retried with positional arguments when called with keywords, and the other way round."""
    if self.request.retries == 0:
        if self.request.kwargs:
            raise self.retry(args=(n + 1, 7), countdown=0.1)
        raise self.retry(kwargs={"step": 9}, countdown=0.1)
    return [n, step, list(self.request.args), self.request.kwargs]


@app.task(bind=True, acks_late=True)
def reject_once(self):
    """Rejected with requeue on its first delivery; the redelivery says so."""
    if not self.request.delivery_info.get("redelivered"):
        raise Reject("not yet", requeue=True)
    return "redelivered"


@app.task(acks_late=True)
def reject_for_good():
    raise Reject("refused", requeue=False)


class NeedsTwo(Exception):
    """An exception whose constructor does not take its own ``args`` back."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")


@app.task
def raise_needs_two():
    raise NeedsTwo("E1", "broken")


@app.task(soft_time_limit=10, time_limit=5)
def badly_limited():
    return "never sent"


@shared_task(bind=True)
def replaced_by(self, sig):
    """Replace this task by ``sig`` (a signature in its dict form), as Celery's docs do."""
    from celery import signature

    raise self.replace(signature(sig))


@shared_task(bind=True)
def nesting(self, replacements, seen=None):
    """Record request.replaced_task_nesting across successive replacements."""
    seen = [*(seen or []), self.request.replaced_task_nesting]
    if replacements:
        return self.replace(nesting.s(replacements - 1, seen))
    return seen


@shared_task(bind=True)
def request_fields(self):
    request = self.request
    return {
        "time_limit": request.time_limit,
        "soft_time_limit": request.soft_time_limit,
        "app_id": (request.properties or {}).get("app_id"),
        "nesting": request.replaced_task_nesting,
    }


@shared_task(bind=True, time_limit=60, soft_time_limit=45)
def declared_limits(self):
    return [self.request.time_limit, self.request.soft_time_limit]


@shared_task(bind=True)
def grow_chord(self, nums, val):
    """A chord header task that adds tasks (and a chain) to its own chord."""
    from celery import chain

    for num in nums:
        self.add_to_chord(add.s(num, val))
    self.add_to_chord(chain(add.s(1, 1), add.s(val)))
    return 0


# -- tests/celery_kit/test_kit_signals.py: what the worker's signals carried -------------------
from celery.signals import task_prerun, task_received, task_unknown  # noqa: E402


@task_received.connect
def _kit_received(sender=None, request=None, **kwargs):
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        f"kit-received-{request.id}",
        f"{request.name} {list(request.args)} {sorted(kwargs)}",
    )


@task_prerun.connect
def _kit_prerun(sender=None, task_id=None, task=None, **kwargs):
    headers = task.request.headers or {}
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        f"kit-prerun-{task_id}",
        f"{getattr(task.request, 'x_kit', None)} {headers.get('x_kit')}",
    )


@task_unknown.connect
def _kit_unknown(sender=None, message=None, exc=None, name=None, id=None, **kwargs):
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        f"kit-unknown-{id}",
        f"{name} {isinstance(exc, KeyError)} {message.headers['id'] == id}",
    )


from celery.signals import (  # noqa: E402
    after_setup_logger,
    celeryd_after_setup,
    celeryd_init,
    worker_init,
    worker_process_init,
    worker_ready,
)


@celeryd_init.connect
def _kit_celeryd_init(sender=None, instance=None, conf=None, options=None, **kwargs):
    same = instance.hostname == sender
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        "kit-celeryd-init",
        f"{sender} {same} {conf is not None} {isinstance(options, dict)}",
    )


@worker_init.connect
def _kit_worker_init(sender=None, **kwargs):
    _note(
        os.environ.get("KIT_SIGNAL_DIR"), "kit-worker-init", f"{sender.hostname} {sorted(kwargs)}"
    )


@after_setup_logger.connect
def _kit_after_setup_logger(sender=None, logger=None, loglevel=None, **kwargs):
    _note(
        os.environ.get("KIT_SIGNAL_DIR"),
        "kit-after-setup-logger",
        f"{sender} {logger.name} {loglevel} {sorted(kwargs)}",
    )


@celeryd_after_setup.connect
def _kit_after_setup(sender=None, instance=None, conf=None, **kwargs):
    _note(os.environ.get("KIT_SIGNAL_DIR"), "kit-celeryd-after-setup", f"{sender}")


@worker_process_init.connect
def _kit_process_init(sender=None, **kwargs):
    _note(os.environ.get("KIT_SIGNAL_DIR"), f"kit-process-init-{os.getpid()}", f"{sender}")


@worker_ready.connect
def _kit_ready(sender=None, **kwargs):
    _note(os.environ.get("KIT_SIGNAL_DIR"), "kit-worker-ready", f"{sender.hostname}")


@app.task(bind=True)
def stamped(self, label):
    """What a stamped task sees of its stamps (names sorted: Celery's order is a set's)."""
    names = self.request.stamped_headers
    return [label, None if names is None else sorted(names), self.request.stamps]


@app.task(bind=True)
def stamped_retry(self, label):
    """Retried once, then what it sees of its stamps (they must survive the retry)."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    names = self.request.stamped_headers
    return [label, self.request.retries, sorted(names or []), self.request.stamps]


@app.task
def state_errback(request, exc, traceback):
    """An errback that notes the state it finds the failed task in (errback-state-<id>)."""
    state = app.AsyncResult(request.id).state
    _note(os.environ.get("KIT_SIGNAL_DIR"), f"errback-state-{request.id}", state)
