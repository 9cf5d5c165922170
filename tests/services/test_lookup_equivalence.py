"""The batch lookup (packed rows read by NumPy, the rollout matrix computed while the
statement runs) answers exactly as the single read, on the hot engine, in the corners:
expiries to the microsecond, exclusions left behind by a segment deleted in chunks, old
hash-scheme segments, groups, a scheduled change, repeated ids, and a catalog that changes
between the matrix and the statement."""

import json
import random
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from webapp.platform.extensions import db
from webapp.services.common import iso, utcnow
from webapp.services.reads import catalog
from webapp.services.reads.path import hot_lookup, hot_read

USERS = list(range(1, 401))


@pytest.fixture
def live(app_on, redis_app, committed_db):
    app = app_on()
    return app, app.test_client()


def build_catalog(client, app, now):
    """Segments of every kind, memberships with expiries around ``now``, exclusions (one of
    them of a deleted segment, as a chunked deletion leaves them for a while), a schedule."""
    rng = random.Random(7)
    created = [
        ("A_EXPLICIT", 0, None),
        ("B_HALF", 50, None),
        ("C_OLD_SCHEME", 30, None),
        ("D_G1", 30, "G"),
        ("E_G2", 40, "G"),
        ("F_TEN", 10, None),
        ("G_GONE", 60, None),
        ("Z_LAST", 100, None),
    ]
    for slug, percent, group in created:
        body = {"slug": slug, "rollout_percent": percent, **({"exclusion_group": group} if group else {})}
        assert client.post("/api/v1/segments", json=body).status_code == 201
    assert (
        client.post(
            "/api/v1/segments/F_TEN/schedule",
            json={"at": iso(now + timedelta(hours=1)), "rollout_percent": 60},
        ).status_code
        == 201
    )
    with app.app_context(), db.engine.begin() as conn:
        ids = dict(conn.execute(sa.text("SELECT slug, id FROM segments")).all())
        conn.execute(sa.text("UPDATE segments SET hash_scheme = 1 WHERE slug = 'C_OLD_SCHEME'"))
        rows = []
        for user in USERS:
            for slug in rng.sample(["A_EXPLICIT", "B_HALF", "C_OLD_SCHEME", "D_G1", "E_G2"], 2):
                # no expiry, already gone, gone 1 µs after now, or later
                until = rng.choice(
                    [None, now, now + timedelta(microseconds=1), now + timedelta(days=3, microseconds=17)]
                )
                rows.append({"u": user, "s": ids[slug], "at": until})
        conn.execute(
            sa.text(
                "INSERT INTO memberships (user_id, segment_id, added_at, expires_at) "
                "VALUES (:u, :s, now(), :at)"
            ),
            rows,
        )
        excluded = [
            {"u": u, "s": ids[rng.choice(["B_HALF", "C_OLD_SCHEME", "G_GONE", "Z_LAST"])]}
            for u in rng.sample(USERS, 120)
        ]
        conn.execute(
            sa.text(
                "INSERT INTO rollout_exclusions (user_id, segment_id, created_at) "
                "VALUES (:u, :s, now()) ON CONFLICT DO NOTHING"
            ),
            excluded,
        )
        conn.execute(sa.text("UPDATE segments SET deleted_at = now() WHERE slug = 'G_GONE'"))
        conn.execute(sa.text("UPDATE catalog_version SET version = version + 1"))


def test_batch_equals_single_reads_in_every_corner(live):
    app, client = live
    now = utcnow().replace(microsecond=500_000) + timedelta(seconds=5)
    build_catalog(client, app, now)
    asked = [*USERS, 7, 7, 399]
    with app.app_context():
        engine = app.extensions["read_engine"]
        for at in (
            now - timedelta(microseconds=1),
            now,
            now + timedelta(microseconds=1),
            now + timedelta(hours=1) - timedelta(microseconds=1),
            now + timedelta(hours=1),
        ):
            batch = hot_lookup(engine, asked, at)
            singles = [hot_read(engine, u, at) for u in asked]
            assert batch.answers() == singles
            assert json.loads(batch.json()) == {
                "users": [
                    {"user_id": u, "segments": [json.loads(a.json) for a in active]}
                    for u, active in zip(asked, singles, strict=True)
                ]
            }
            assert batch.read_counts() == Counter(a.slug for active in singles for a in active)
        gone = {a.slug for active in hot_lookup(engine, USERS, now).answers() for a in active}
        assert "G_GONE" not in gone and "Z_LAST" in gone and "C_OLD_SCHEME" in gone
        # an exclusion of the deleted segment takes nothing from the last segment by slug
        z_last = [
            u
            for u, active in zip(USERS, hot_lookup(engine, USERS, now).answers(), strict=True)
            if any(a.slug == "Z_LAST" for a in active)
        ]
        with db.engine.connect() as conn:
            excluded_from_z = set(
                conn.scalars(
                    sa.text(
                        "SELECT user_id FROM rollout_exclusions e JOIN segments s ON s.id = e.segment_id "
                        "WHERE s.slug = 'Z_LAST'"
                    )
                ).all()
            )
        assert set(z_last) == set(USERS) - excluded_from_z


def test_a_catalog_changed_under_the_early_matrix_is_not_used(live, monkeypatch):
    """The matrix computed while the statement runs uses the catalog in memory; when the
    statement finds a newer version, the answer is evaluated under the new catalog."""
    app, client = live
    client.post("/api/v1/segments", json={"slug": "MOVING", "rollout_percent": 100})
    with app.app_context():
        engine = app.extensions["read_engine"]
        assert all(a[0].slug == "MOVING" for a in hot_lookup(engine, USERS).answers())  # kept: 100%
        client.patch("/api/v1/segments/MOVING", json={"rollout_percent": 0})  # another process's write
        matrices = []
        original = catalog.Rollouts.matrix

        def spy(self, users):
            matrices.append(self)
            return original(self, users)

        monkeypatch.setattr(catalog.Rollouts, "matrix", spy)
        assert hot_lookup(engine, USERS).answers() == [[] for _ in USERS]
        assert len(matrices) == 2  # the early one (stale catalog, thrown away) and the current one
