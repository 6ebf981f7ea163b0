"""``app.bugreport()`` and ``inspect().report()``: what a bug report needs, secrets masked.

The layout is Celery's (``software ->``, ``platform ->``, ``loader ->``, ``settings ->``, then
the settings the app changed), with pgq's parts in place of Celery's: pgq and psycopg instead of
celery, kombu and billiard, PostgreSQL as transport and result store.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["bugreport", "hidden_filtered", "mask_url"]

# Celery's pattern of setting names whose values a report never shows.
HIDDEN_SETTINGS = re.compile(
    "API|TOKEN|KEY|SECRET|PASS|PROFANITIES_LIST|SIGNATURE|DATABASE|BEAT_DBURI", re.IGNORECASE
)
MASK = "*" * 8
# Where the next server of a multi-server URL starts: a ';' followed by a scheme (a ';' inside
# a password is not followed by one).
_NEXT_SERVER = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")

_REPORT = """\
software -> pgq:{pgq_v} psycopg:{psycopg_v} py:{py_v}
platform -> system:{system} arch:{arch}
            kernel version:{kernel_version} imp:{py_i}
loader   -> {loader}
settings -> transport:postgresql results:postgresql

{human_settings}
"""


def mask_url(value: Any, mask: str = MASK) -> Any:
    """A URL with its password replaced by ``mask`` (anything else as it is). A multi-server
    URL (``sentinel://:a@h1:26379;sentinel://:b@h2:26379/0``) has each server's masked."""
    if not isinstance(value, str) or "://" not in value:
        return value
    servers = _NEXT_SERVER.split(value)
    if len(servers) > 1:
        return ";".join(mask_url(server, mask) for server in servers)
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":" + mask
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def hidden_filtered(conf: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with secrets masked, as Celery's ``filter_hidden_settings``: names matching
    ``HIDDEN_SETTINGS`` entirely, URLs (``broker_url``, ``*backend*``: pgq's database) by their
    password."""

    def censor(key: Any, value: Any) -> Any:
        if isinstance(value, Mapping):
            return hidden_filtered(value)
        if isinstance(key, str):
            if HIDDEN_SETTINGS.search(key):
                return MASK
            lowered = key.lower()
            if lowered.startswith("broker_") and lowered.endswith("url") or "backend" in lowered:
                return mask_url(value)
        return value

    return {k: censor(k, v) for k, v in conf.items()}


def bugreport(app: Any) -> str:
    """Versions, platform, loader and the settings the app changed (secrets masked)."""
    import psycopg

    import pgq

    conf = getattr(app, "conf", None)
    changed = dict(conf.without_defaults()) if conf is not None else {}
    human = "\n".join(f"{key}: {value!r}" for key, value in hidden_filtered(changed).items())
    return _REPORT.format(
        pgq_v=getattr(pgq, "__version__", "unknown"),
        psycopg_v=psycopg.__version__,
        py_v=platform.python_version(),
        system=platform.system(),
        arch=", ".join(x for x in platform.architecture() if x),
        kernel_version=platform.release(),
        py_i=platform.python_implementation(),
        loader=f"{type(app).__module__}.{type(app).__qualname__}",
        human_settings=human,
    )
