from datetime import UTC, datetime, timedelta

import pytest

from webapp.web.filters import filesize, reltime

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "delta, text",
    [
        (timedelta(seconds=-5), "just now"),
        (timedelta(seconds=30), "in under a minute"),
        (timedelta(minutes=-7), "7 min ago"),
        (timedelta(hours=5, minutes=59), "in 6 h"),
        (timedelta(days=-3), "3 d ago"),
    ],
)
def test_reltime(delta, text):
    assert reltime(NOW + delta, now=NOW) == text
    assert reltime(None) == "never"


def test_filesize():
    assert [filesize(v) for v in (0, 900, 2048, 5 * 1024 * 1024)] == ["0 B", "900 B", "2.0 KB", "5.0 MB"]
