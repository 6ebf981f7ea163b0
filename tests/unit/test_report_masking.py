"""``app.bugreport()`` / ``inspect().report()`` mask every password of a URL setting, as
Celery's report does: one per server of a multi-server URL, passwords holding ``@``, ``,`` or
``;`` included."""

from __future__ import annotations

import pytest

from pgq.compat import Celery
from pgq.report import mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "sentinel://:secret1@h1:26379;sentinel://:secret2@h2:26379/0",
            "sentinel://:********@h1:26379;sentinel://:********@h2:26379/0",
        ),
        ("redis://:p,ass@word@localhost:6379/0", "redis://:********@localhost:6379/0"),
        ("redis://user:p,a@ss@localhost:6379/0", "redis://user:********@localhost:6379/0"),
        ("postgresql://u:pa;ss@db/app", "postgresql://u:********@db/app"),
        (
            "cache+memcached://172.19.26.240:11211;172.19.26.242:11211/",
            "cache+memcached://172.19.26.240:11211;172.19.26.242:11211/",
        ),
    ],
)
def test_mask_url_hides_every_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_bugreport_masks_each_server_of_a_multi_server_result_backend() -> None:
    app = Celery("report", broker="postgresql://pgq:dbsecret@localhost/pgq")
    app.conf.result_backend = "sentinel://:secret1@h1:26379;sentinel://:secret2@h2:26379/0"
    report = app.bugreport()
    assert "secret1" not in report and "secret2" not in report and "dbsecret" not in report
    assert "sentinel://:********@h1:26379;sentinel://:********@h2:26379/0" in report
