"""Start-up policy: which PostgreSQL server pgq uses, and getting it ready.

Selection, first match wins: a URL given in code -> ``PGQ_DATABASE_URL`` -> the embedded server
(``pgq.server.embedded``, started and migrated on first use). ``pgq.server.migrate`` applies the
Alembic migrations. The store (``pgq.store.database``) only opens connections to the URL chosen
here, so it imports nothing of this package.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from pgq.server.embedded import embedded_url
from pgq.settings import Settings
from pgq.store.database import LISTEN_URL_OPTION, POOLER_OPTION, normalize_url, split_options

__all__ = ["resolve_url"]


def resolve_url(explicit: str | None, settings: Settings) -> str:
    """The URL to use: the one given in code, else PGQ_DATABASE_URL, else the embedded server.

    ``PGQ_POOLER`` and ``PGQ_LISTEN_URL`` are carried into it as ``pgq_pooler`` and
    ``pgq_listen_url`` (a URL's own options win), so a ``Database`` built from it knows them.
    """
    if explicit:
        url = normalize_url(explicit)
    elif settings.database_url:
        url = normalize_url(settings.database_url)
    else:
        url = embedded_url(settings.home)
    _, options = split_options(url)
    wanted = ((POOLER_OPTION, settings.pooler), (LISTEN_URL_OPTION, settings.listen_url))
    extra = [(name, value) for name, value in wanted if value and name not in options]
    if not extra:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra, quote_via=quote)) if q)
    return urlunsplit(parts._replace(query=query))
