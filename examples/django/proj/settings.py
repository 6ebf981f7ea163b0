"""Settings of the example project: one PostgreSQL database for Django's tables and pgq's.

The database is ``PGQ_DATABASE_URL`` when it is set, else pgq's embedded PostgreSQL server
(started on first use, shared by every pgq process of this user), so the example needs no setup.
"""

import os
from importlib.util import find_spec
from pathlib import Path

from pgq.django.db import database_settings

BASE_DIR = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    url = os.environ.get("PGQ_DATABASE_URL")
    if url:
        return url
    from pgq.server import resolve_url
    from pgq.settings import Settings

    return resolve_url(None, Settings.from_env())  # the embedded server


DATABASE_URL = _database_url()

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pgq.django",  # transactional enqueue, `migrate` creates pgq's schema, the admin
    "shop",
    "reports",
]
if find_spec("django.tasks") is None:  # Django 5.2: the django-tasks backport
    INSTALLED_APPS.append("django_tasks")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "proj.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Persistent connections: the worker closes stale ones before and after each task (pgq's
# Django fix-up), as Django does around each request.
DATABASES = {"default": database_settings(DATABASE_URL, CONN_MAX_AGE=60)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# Celery's settings, read by proj/celery.py (namespace="CELERY"). The broker is the same
# PostgreSQL database: tasks sent inside transaction.atomic() are part of the transaction.
CELERY_BROKER_URL = DATABASE_URL
CELERY_TASK_TRACK_STARTED = True
# Django's Tasks framework queues on "default", Celery on "celery": one default queue for both, so
# `pgq worker -A proj` (which consumes the app's default queue) runs both kinds of task.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_TIME_LIMIT = 30 * 60

# Django's Tasks framework (django.tasks; django_tasks on Django 5.2) on pgq: the same table and
# the same `pgq worker` as the Celery-API tasks.
# TODO(D2): the fallback goes once pgq.django.backend is merged (branch django-backend).
TASKS = {
    "default": {
        "BACKEND": (
            "pgq.django.TaskBackend"
            if find_spec("pgq.django.backend")
            else f"{'django.tasks' if find_spec('django.tasks') else 'django_tasks'}"
            ".backends.immediate.ImmediateBackend"
        ),
    }
}
