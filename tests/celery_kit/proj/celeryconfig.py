# Celery reads CELERY_BROKER_URL / CELERY_RESULT_BACKEND from the environment before these,
# which is how the kit points the same project at Redis (Celery) or PostgreSQL (pgq).
broker_url = "redis://127.0.0.1:6379/0"
result_backend = "redis://127.0.0.1:6379/0"

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True
result_expires = 3600

task_routes = {
    "proj.tasks.routed": {"queue": "celery"},
}
