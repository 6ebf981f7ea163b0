"""Which of Celery's integration tests pgq is not held to, and why.

``EXCLUDED``: tests that cannot apply to pgq: they read Celery's in-process worker memory or a
specific transport's internals. Each entry says which.

``KNOWN_FAILING``: tests that pass on Celery and fail on pgq because pgq lacks an API or behaves
differently. They are pgq's gaps, not exclusions: the suite holds pgq to this baseline (no new
failure), and a test leaves the list as soon as it passes.

Test ids are ``<file>::<class>::<test name>`` as the JUnit report names them.
"""

# ruff: noqa: E501 - a table of test ids and reasons
from __future__ import annotations

EXCLUDED: dict[str, str] = {
    "test_inspect.py::test_Inspect::test_hello_stamps_received_revoked_ids_locally": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
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
    "test_tasks.py::test_tasks::test_send_task_without_ignore_result_stores_result": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
    ),
    "test_tasks.py::test_tasks::test_send_task_without_ignore_result_uses_task_ignore_result": (
        "reads Celery's in-process worker memory (celery.worker.state), which only exists when the worker runs inside the test process"
    ),
    "test_tasks.py::test_tasks::test_task_sent_event_respects_publish_retry_limit": (
        "drives kombu's producer and channel (app.amqp.Producer, app.connection_for_write, the event dispatcher's buffer): AMQP transport internals"
    ),
}

KNOWN_FAILING: dict[str, str] = {
    "test_group_chains.py::test_group_chains::test_pending_chord_keeps_header_errback[0-1]": (
        "timing-dependent on pgq: the errback can run before the failed task's FAILURE is committed",
    ),
    "test_group_chains.py::test_group_chains::test_large_group_pipeline": (
        "needs the before_task_publish/after_task_publish/task_received signals, which pgq.compat does not send yet"
    ),
    "test_group_chains.py::test_group_chains::test_pending_chord_keeps_header_errback[0-2]": (
        "timing-dependent on pgq: the errback can run before the failed task's FAILURE is committed"
    ),
    "test_group_chains.py::test_group_chains::test_pending_chord_keeps_header_errback[2-1]": (
        "timing-dependent on pgq: the errback can run before the failed task's FAILURE is committed"
    ),
    "test_group_chains.py::test_group_chains::test_pending_chord_keeps_header_errback[2-2]": (
        "timing-dependent on pgq: the errback can run before the failed task's FAILURE is committed"
    ),
    "test_inspect.py::test_Inspect::test_active": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_inspect.py::test_Inspect::test_active_queues": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_inspect.py::test_Inspect::test_clock": ("inspect().clock() is not in pgq"),
    "test_inspect.py::test_Inspect::test_conf": ("inspect().conf() is not in pgq"),
    "test_inspect.py::test_Inspect::test_ping": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_inspect.py::test_Inspect::test_query_task": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_inspect.py::test_Inspect::test_registered": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_inspect.py::test_Inspect::test_report": ("inspect().report() is not in pgq"),
    "test_inspect.py::test_Inspect::test_report_with_multiserver_result_backend": (
        "app.bugreport is not in pgq"
    ),
    "test_inspect.py::test_Inspect::test_revoked": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_inspect.py::test_Inspect::test_scheduled": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_inspect.py::test_Inspect::test_stats": (
        "inspect replies are keyed by pgq's worker name, not Celery's default node name celery@<host>"
    ),
    "test_loader.py::test_loader::test_autodiscovery__when_packages_do_not_exist": (
        "autodiscover_tasks raises pgq's ConfigurationError, not ModuleNotFoundError, for a package that does not exist"
    ),
    "test_tasks.py::test_pool_acquire_timeout::test_concurrent_apply_async_with_timeout": (
        "the broker_pool_acquire_timeout setting is not in pgq's configuration"
    ),
    "test_tasks.py::test_pool_acquire_timeout::test_pool_timeout_none_blocks_successfully": (
        "the broker_pool_acquire_timeout setting is not in pgq's configuration"
    ),
    "test_tasks.py::test_pool_acquire_timeout::test_task_succeeds_with_pool_timeout_configured": (
        "the broker_pool_acquire_timeout setting is not in pgq's configuration"
    ),
    "test_tasks.py::test_signal_bound_method_receivers::test_disconnect_leaves_other_instance_connected": (
        "signal receivers that are bound methods of several instances get nothing: the signals these tests use are not sent by pgq.compat yet"
    ),
    "test_tasks.py::test_signal_bound_method_receivers::test_each_instance_receives": (
        "signal receivers that are bound methods of several instances get nothing: the signals these tests use are not sent by pgq.compat yet"
    ),
    "test_tasks.py::test_signal_bound_method_receivers::test_other_instance_receives_after_garbage_collection": (
        "signal receivers that are bound methods of several instances get nothing: the signals these tests use are not sent by pgq.compat yet"
    ),
    "test_tasks.py::test_task_replacement::test_replaced_task_nesting_chain": (
        "needs the before_task_publish/after_task_publish/task_received signals, which pgq.compat does not send yet"
    ),
    "test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_0": (
        "needs the before_task_publish/after_task_publish/task_received signals, which pgq.compat does not send yet"
    ),
    "test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_1": (
        "needs the before_task_publish/after_task_publish/task_received signals, which pgq.compat does not send yet"
    ),
    "test_tasks.py::test_tasks::test_pydantic_annotations": (
        "pydantic argument models (pydantic=True on a task) are not in pgq yet"
    ),
    "test_tasks.py::test_tasks::test_pydantic_model_arguments": (
        "pydantic argument models (pydantic=True on a task) are not in pgq yet"
    ),
    "test_tasks.py::test_tasks::test_pydantic_string_annotations": (
        "pydantic argument models (pydantic=True on a task) are not in pgq yet"
    ),
    "test_tasks.py::test_tasks::test_revoke_by_stamped_headers_no_match": (
        "app.control.revoke_by_stamped_headers(..., reply=True) returns no replies on pgq"
    ),
    "test_tasks.py::test_tasks::test_revoke_keeps_state_of_task_started_elsewhere[PROGRESS]": (
        "app.control.revoke(..., reply=True) returns no replies on pgq"
    ),
    "test_tasks.py::test_tasks::test_revoke_keeps_state_of_task_started_elsewhere[STARTED]": (
        "app.control.revoke(..., reply=True) returns no replies on pgq"
    ),
    "test_tasks.py::test_tasks::test_revoked_by_headers_simple_canvas": (
        "revoke_by_stamped_headers revokes the tasks that exist when it is called; Celery's "
        "workers also drop tasks sent later with those stamps (docs/guides/workflows.md)"
    ),
}
