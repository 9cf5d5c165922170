"""Hypothesis strategies for every date a client can send: the whole calendar (years 1 and
9999 included, shrinking towards them as often as towards today), naive or with any offset
up to ±23:59 (the real world's +14:00 and -12:00 among them), written the ways clients write
them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EDGES = [
    datetime.min,
    datetime.min + timedelta(hours=13, minutes=59),
    datetime.max,
    datetime.max - timedelta(hours=11, minutes=59),
    datetime(1969, 12, 31, 23, 59),
    datetime(1970, 1, 1),
    datetime(9998, 12, 31, 23, 59),
]
WORLD_EDGES = [timedelta(hours=14), timedelta(hours=-12), timedelta(0), timedelta(hours=23, minutes=59)]
WORLD_EDGES.append(-WORLD_EDGES[-1])

offsets = st.one_of(
    st.sampled_from(WORLD_EDGES),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda minutes: timedelta(minutes=minutes)),
)
zones = st.one_of(st.none(), st.just(UTC), offsets.map(timezone))
near_now = st.integers(-400 * 86400, 12 * 366 * 86400).map(
    lambda seconds: datetime.now(UTC).replace(tzinfo=None, microsecond=0) + timedelta(seconds=seconds)
)
naive = st.one_of(st.sampled_from(EDGES), near_now, st.datetimes())


@st.composite
def moments(draw: st.DrawFn) -> datetime:
    """A datetime anywhere in years 1..9999, naive or aware with any offset (not converted:
    0001-01-01T00:00:00+14:00 is a moment before year 1 in UTC)."""
    return draw(naive).replace(tzinfo=draw(zones))


@st.composite
def moment_texts(draw: st.DrawFn, separators: str = "T ") -> tuple[datetime, str]:
    """A :func:`moments` value and an ISO 8601 / RFC 3339 string of it: ``T`` or a space, ``Z``
    for UTC, seconds and fractions or not, sometimes only the date (then the value is that
    date's naive midnight, as it means)."""
    value = draw(moments())
    style = draw(st.sampled_from(["seconds", "minutes", "micro", "date", "z"]))
    if style == "date":
        return datetime(value.year, value.month, value.day), value.date().isoformat()
    if style in ("seconds", "minutes"):
        value = value.replace(microsecond=0, second=0 if style == "minutes" else value.second)
    text = value.isoformat(
        sep=draw(st.sampled_from(list(separators))), timespec="auto" if style in ("micro", "z") else style
    )
    if style == "z" and value.tzinfo is not None and value.utcoffset() == timedelta(0):
        text = text.replace("+00:00", "Z")
    return value, text


def in_utc(value: datetime) -> datetime | None:
    """The oracle: ``value`` in UTC (naive = UTC already), None when that falls outside years
    1..9999 (computed on naive datetimes, not with the code under test)."""
    offset = value.utcoffset() or timedelta(0)
    try:
        return (value.replace(tzinfo=None) - offset).replace(tzinfo=UTC)
    except OverflowError:
        return None


# The date tests' hypothesis settings (API and dashboard alike).
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
MARGIN = timedelta(minutes=5)  # the clock moves while a test runs: no verdict this close to a bound


def window(value: datetime, horizon: timedelta, *, naive_ok: bool = False) -> int | None:
    """200 if ``value`` is in (now, now + horizon], 422 if it is not, None when too close to tell."""
    if value.tzinfo is None and not naive_ok:
        return 422
    utc = in_utc(value)
    now = datetime.now(UTC)
    if utc is None or utc < now - MARGIN or utc > now + horizon + MARGIN:
        return 422
    if now + MARGIN < utc < now + horizon - MARGIN:
        return 200
    return None


def started(year: int, month: int) -> bool:
    now = datetime.now(UTC)
    return (year, month) <= (now.year, now.month)
