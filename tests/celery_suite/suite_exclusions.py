"""Which of Celery's integration tests pgq is not held to, and why.

``EXCLUDED``: tests that cannot apply to pgq: they read Celery's in-process worker memory or a
specific transport's internals, or they need what pgq's contract rules out (sending an existing
task id again re-runs it on Celery; on pgq it creates nothing). Each entry says which.

``KNOWN_FAILING``: tests that pass on Celery and fail on pgq because pgq lacks an API or behaves
differently. They are pgq's gaps, not exclusions: the suite holds pgq to this baseline (no new
failure), and a test leaves the list as soon as it passes.

Test ids are ``<file>::<class>::<test name>`` as the JUnit report names them.
"""

# ruff: noqa: E501 - a table of test ids and reasons
from __future__ import annotations

EXCLUDED: dict[str, str] = {
    "test_canvas.py::test_result_set::test_join_native_timeout_zero_gives_up_on_pending_results": (
        "tests the key/value backends' get_many poll loop and its _cache (the test skips unless app.backend is a BaseKeyValueStoreBackend); pgq's results are rows of pgq.tasks, not a key/value store. pgq's join_native(timeout=0) reads each result once, as Celery's does (tests/integration/test_compat_results.py)"
    ),
    "test_canvas.py::test_result_set::test_join_native_timeout_zero_returns_results_that_are_ready": (
        "tests the key/value backends' get_many poll loop and its _cache (the test skips unless app.backend is a BaseKeyValueStoreBackend); pgq's results are rows of pgq.tasks, not a key/value store. pgq's join_native(timeout=0) reads each result once, as Celery's does (tests/integration/test_compat_results.py)"
    ),
    "test_canvas.py::test_stamping_mechanism::test_err_linking_stamped_sig": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_canvas.py::test_stamping_mechanism::test_linking_stamped_sig": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_canvas.py::test_stamping_mechanism::test_task_received_has_access_to_stamps": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_inspect.py::test_Inspect::test_hello_stamps_received_revoked_ids_locally": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
    ),
    "test_tasks.py::test_signal_bound_method_receivers::test_disconnect_leaves_other_instance_connected": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_tasks.py::test_signal_bound_method_receivers::test_each_instance_receives": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_tasks.py::test_signal_bound_method_receivers::test_other_instance_receives_after_garbage_collection": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_tasks.py::test_task_redis_result_backend::test_asyncresult_forget_cancels_subscription": (
        "reads the Redis result backend's internals (its pub/sub channels or keys), which pgq's PostgreSQL results do not have"
    ),
    "test_tasks.py::test_task_redis_result_backend::test_asyncresult_get_cancels_subscription": (
        "reads the Redis result backend's internals (its pub/sub channels or keys), which pgq's PostgreSQL results do not have"
    ),
    "test_tasks.py::test_task_redis_result_backend::test_retry_preserves_ignore_result_false": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
    ),
    "test_tasks.py::test_task_redis_result_backend::test_retry_preserves_ignore_result_true": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
    ),
    "test_tasks.py::test_task_replacement::test_replaced_task_nesting_chain": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_0": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_1": (
        "connects a receiver to task_received (a signal the worker sends) in the test process: Celery's test worker runs there, pgq's worker is a process of its own"
    ),
    "test_tasks.py::test_tasks::test_send_task_without_ignore_result_stores_result": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
    ),
    "test_tasks.py::test_tasks::test_send_task_without_ignore_result_uses_task_ignore_result": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
    ),
    "test_tasks.py::test_tasks::test_task_sent_event_respects_publish_retry_limit": (
        "drives kombu's producer and channel (app.amqp.Producer, app.connection_for_write, the event dispatcher's buffer): AMQP transport internals"
    ),
    "test_inspect.py::test_Inspect::test_stats": (
        "asserts the worker's pid is the test process's (Celery's test worker is a thread of it): in-process worker; pgq's worker is a process of its own (the rest of the test, 'processes' included, passes on pgq)"
    ),
    "test_inspect.py::test_Inspect::test_report": (
        "asserts the report says 'software -> celery:': pgq's bug report names the software that runs (pgq and its libraries, Celery not being installed); the report's format and its masking of every server's password are Celery's"
    ),
    "test_tasks.py::test_tasks::test_revoked_by_headers_simple_canvas": (
        "clears Celery's in-process worker memory (celery.worker.state.revoked_stamps) between its cases, and its later cases depend on that clear: each case stamps the task with the same id and revokes another, so a revocation that outlives the clear (pgq's are rows) revokes the later cases' tasks"
    ),
    "test_canvas.py::test_chord::test_mutable_errback_called_by_chord_from_chain[errback_new_style]": (
        "pgq's contract (CONTRACT.md, docs/compatibility.md): sending a task id that already exists creates nothing and returns that task's result. The test's body half sends again a signature whose frozen id its header half ran (Celery runs that id a second time); on pgq that task does not run again and its errback is not called. Its header half passes on pgq"
    ),
    "test_canvas.py::test_chord::test_mutable_errback_called_by_chord_from_chain[errback_old_style]": (
        "pgq's contract (CONTRACT.md, docs/compatibility.md): sending a task id that already exists creates nothing and returns that task's result. The test's body half sends again a signature whose frozen id its header half ran (Celery runs that id a second time); on pgq that task does not run again and its errback is not called. Its header half passes on pgq"
    ),
    "test_canvas.py::test_chord::test_mutable_errback_called_by_chord_from_chain_tail[errback_new_style]": (
        "pgq's contract (CONTRACT.md, docs/compatibility.md): sending a task id that already exists creates nothing and returns that task's result. The test's body half sends again a signature whose frozen id its header half ran (Celery runs that id a second time); on pgq that task does not run again and its errback is not called. Its header half passes on pgq"
    ),
    "test_canvas.py::test_chord::test_mutable_errback_called_by_chord_from_chain_tail[errback_old_style]": (
        "pgq's contract (CONTRACT.md, docs/compatibility.md): sending a task id that already exists creates nothing and returns that task's result. The test's body half sends again a signature whose frozen id its header half ran (Celery runs that id a second time); on pgq that task does not run again and its errback is not called. Its header half passes on pgq"
    ),
    "test_canvas.py::test_chord::test_mutable_errback_called_by_chord_from_group[errback_new_style]": (
        "pgq's contract (CONTRACT.md, docs/compatibility.md): sending a task id that already exists creates nothing and returns that task's result. The test's body half sends again a signature whose frozen id its header half ran (Celery runs that id a second time); on pgq that task does not run again and its errback is not called. Its header half passes on pgq"
    ),
    "test_canvas.py::test_chord::test_mutable_errback_called_by_chord_from_group[errback_old_style]": (
        "pgq's contract (CONTRACT.md, docs/compatibility.md): sending a task id that already exists creates nothing and returns that task's result. The test's body half sends again a signature whose frozen id its header half ran (Celery runs that id a second time); on pgq that task does not run again and its errback is not called. Its header half passes on pgq"
    ),
    "test_canvas.py::test_chord::test_chord_on_error": (
        "reads the Redis result backend's internals: the chord's results from its '.j' key (backend.get_key_for_group, a Redis sorted set). Before that it reads res.children[0].children[0]: Celery records the old-style errbacks a failed task sends as one GroupResult child, pgq's children are the flat list of tasks whose parent is the task"
    ),
    "test_canvas.py::test_chord::test_reapplying_frozen_chord_dispatches_body_again": (
        "pgq's contract (CONTRACT.md, docs/compatibility.md): sending a task id that already exists creates nothing and returns that task's result. The test applies one frozen chord twice and expects its body to run twice: Celery sends the same ids again (the header tasks', the group's and the body's) and runs them again; on pgq the second apply returns the first run's result and the body runs once"
    ),
    "test_canvas.py::test_chord::test_simple_chord_with_a_delay_in_group_save": (
        "a key/value result backend's internals: it runs only when app.backend is a BaseKeyValueStoreBackend (it skips otherwise, on Celery too) and slows down that backend's chord counter (_apply_chord_incr); pgq counts a chord's header in the body's row, so there is no such step"
    ),
}

KNOWN_FAILING: dict[str, str] = {}
