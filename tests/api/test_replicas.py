"""Hot reads on a real streaming replica (issue 25): ``replica_pair`` (tests/support/replicas.py)
runs an embedded primary and a replica of it; each test builds the app on them with
``DATABASE_REPLICA_URLS`` and injects replay lag with ``recovery_min_apply_delay``.

Where each read was served is the reader's own count (``Replicas.counts``: (server, reason)),
the same events ``/metrics`` counts."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

import pytest

from tests.support.replicas import empty_tables
from webapp.services.membership import bulk
from webapp.services.reads.replicas import HEADER, parse_token

TOKEN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")
LAG = 1.0  # seconds of injected replay lag (the "1 s")


@pytest.fixture
def on_replicas(replica_pair, app_on):
    """``build(mode, **settings)``: the app on the pair (its reads may go to the replica);
    afterwards no lag, the replica caught up, the tables emptied."""
    built = []

    def build(mode: str, **settings: object):
        app = app_on(
            DATABASE_URL=replica_pair.primary_url,
            DATABASE_REPLICA_URLS=[replica_pair.replica_url],
            REPLICA_READS=mode,
            REPLICA_RETRY_SECONDS=0.3,
            **settings,
        )
        built.append(app)
        return app

    yield build
    if replica_pair.replica_pid() is None:  # (a test that killed it failed before starting it again)
        replica_pair.start_replica()
    replica_pair.lag(0)
    replica_pair.caught_up()
    empty_tables(replica_pair.primary_url)
    for app in built:
        for engine in (
            app.extensions["read_engine"],
            *(r.engine for r in app.extensions["reader"].replicas.replicas),
        ):
            engine.dispose()
        with app.app_context():
            from webapp.platform.extensions import db

            db.engine.dispose()


class Client:
    """The app's test client, keeping the token of each write as a client would."""

    def __init__(self, app):
        self.app, self.http = app, app.test_client()
        self.token: str | None = None

    @property
    def counts(self) -> Counter:
        return self.app.extensions["reader"].replicas.counts

    def write(self, method: str, path: str, body: dict) -> dict:
        response = getattr(self.http, method)(f"/api/v1{path}", json=body)
        assert response.status_code in (200, 201, 202), response.json
        assert TOKEN.fullmatch(response.headers[HEADER]), response.headers.get(HEADER)
        self.token = response.headers[HEADER]
        return response.json

    def add(self, user_id: int, slug: str) -> None:
        self.write("post", f"/users/{user_id}/segments", {"add": [slug], "del": []})

    def slugs(self, user_id: int, *, token: bool) -> list[str]:
        """The user's segments by GET /api/v1/users/<id>/segments (answered in front of Flask)."""
        headers = {HEADER: self.token} if token and self.token else {}
        response = self.http.get(f"/api/v1/users/{user_id}/segments", headers=headers)
        assert response.status_code == 200, response.data
        return [s["slug"] for s in response.json["segments"]]

    def seed_slugs(self, user_id: int, *, token: bool) -> list[str]:
        headers = {HEADER: self.token} if token and self.token else {}
        response = self.http.get(f"/segment/user?id={user_id}", headers=headers)
        assert response.status_code in (200, 204), response.data
        return [s["slug"] for s in response.json["segments"]] if response.status_code == 200 else []

    def lookup_slugs(self, user_ids: list[int], *, token: bool) -> list[list[str]]:
        headers = {HEADER: self.token} if token and self.token else {}
        response = self.http.post(
            "/api/v1/users/segments:lookup", json={"user_ids": user_ids}, headers=headers
        )
        assert response.status_code == 200, response.data
        return [[s["slug"] for s in user["segments"]] for user in response.json["users"]]

    def flag(self, user_id: int, slug: str, *, token: bool) -> bool:
        """OpenFeature's single evaluation of ``slug`` (answered in front of Flask)."""
        headers = {HEADER: self.token} if token and self.token else {}
        body = {"context": {"targetingKey": str(user_id)}}
        response = self.http.post(f"/ofrep/v1/evaluate/flags/{slug}", json=body, headers=headers)
        assert response.status_code == 200, response.data
        return response.json["value"]

    def flags(self, user_id: int, *, token: bool) -> list[str]:
        """OpenFeature's bulk evaluation: the keys whose value is true (answered by Flask)."""
        headers = {HEADER: self.token} if token and self.token else {}
        body = {"context": {"targetingKey": str(user_id)}}
        response = self.http.post("/ofrep/v1/evaluate/flags", json=body, headers=headers)
        assert response.status_code == 200, response.data
        return sorted(flag["key"] for flag in response.json["flags"] if flag["value"])


def settled(client: Client, pair) -> None:
    """The replica caught up and known to be (a read through it, which also measures its lag)."""
    pair.caught_up()
    client.slugs(1, token=False)


def test_a_token_less_read_from_a_lagging_replica_is_stale(on_replicas, replica_pair):
    """Proves the tests can see staleness: bounded mode with a wide bound, 1 s of replay lag, a
    write, then at once the same read without its token, served by the replica, misses it."""
    client = Client(on_replicas("bounded", REPLICA_MAX_LAG_MS=10_000))
    client.write("post", "/segments", {"slug": "STALE"})
    settled(client, replica_pair)
    replica_pair.lag(LAG)
    client.add(7, "STALE")
    assert client.slugs(7, token=False) == []  # the replica's answer: the write not replayed yet
    assert client.counts[("replica", "bounded")] >= 2
    replica_pair.lag(0)
    replica_pair.caught_up()
    assert client.slugs(7, token=False) == ["STALE"]


def test_a_tokened_read_always_sees_its_write_under_1s_of_lag(on_replicas, replica_pair):
    """The issue's "done means": in bounded mode a client that sends back its token never sees
    its own write missing, on each read (the single read, the seed's, the batch lookup); the
    replica behind, those reads wait REPLICA_WAIT_MS and then read the primary. Caught up, the
    replica serves them."""
    client = Client(on_replicas("bounded", REPLICA_MAX_LAG_MS=10_000))
    client.write("post", "/segments", {"slug": "MINE"})
    client.write("post", "/segments", {"slug": "ALSO"})
    settled(client, replica_pair)
    replica_pair.lag(LAG)
    for user_id in range(10, 16):
        client.add(user_id, "MINE")
        assert client.slugs(user_id, token=True) == ["MINE"]
        assert client.seed_slugs(user_id, token=True) == ["MINE"]
        client.add(user_id, "ALSO")
        assert client.lookup_slugs([user_id, 99], token=True) == [["ALSO", "MINE"], []]
    # (each from the primary after REPLICA_WAIT_MS, unless a busy machine took a second to get there)
    assert client.counts[("primary", "behind")] + client.counts[("replica", "token")] == 18
    assert client.counts[("primary", "behind")] > 0
    served_by_replica = client.counts[("replica", "token")]
    replica_pair.lag(0)
    replica_pair.caught_up()
    assert client.slugs(15, token=True) == ["ALSO", "MINE"]
    assert client.lookup_slugs([10, 15], token=True) == [["ALSO", "MINE"]] * 2
    assert client.counts[("replica", "token")] == served_by_replica + 2


def test_a_check_in_the_reads_own_statement_passes_while_the_read_is_stale(replica_pair):
    """Why the replay check is a statement of its own: a statement's snapshot is taken before
    ``pg_last_wal_replay_lsn()`` is evaluated. Widened with pg_sleep (the write replayed during
    the sleep), the single statement's check passes at the write's token and its read misses the
    row; the same check and read as two statements pipelined in one round trip (what the read
    path sends) pass and see it."""
    with replica_pair.connect(replica_pair.primary_port) as primary:
        primary.execute("CREATE TABLE IF NOT EXISTS race_probe (id int)")
    replica_pair.caught_up()
    replica_pair.lag(0.5)
    try:
        with (
            replica_pair.connect(replica_pair.primary_port) as primary,
            replica_pair.connect(replica_pair.replica_port) as replica,
        ):

            def write(row: int) -> str:
                primary.execute("INSERT INTO race_probe VALUES (%s)", (row,))
                return primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]

            token = write(1)
            checked, seen = replica.execute(
                """WITH slept AS MATERIALIZED (SELECT pg_sleep(1.5))
                SELECT (SELECT pg_last_wal_replay_lsn() >= %(token)s::pg_lsn FROM slept),
                       (SELECT count(*) FROM race_probe WHERE id = %(row)s)""",
                {"token": token, "row": 1},
            ).fetchone()
            assert (checked, seen) == (True, 0)  # the check passed, the read was stale

            token = write(2)
            with replica.cursor() as check, replica.cursor() as read:
                with replica.pipeline():
                    check.execute(
                        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn FROM pg_sleep(1.5)", (token,)
                    )
                    read.execute("SELECT count(*) FROM race_probe WHERE id = %s", (2,))
                assert (check.fetchone()[0], read.fetchone()[0]) == (True, 1)
    finally:
        replica_pair.lag(0)
        with replica_pair.connect(replica_pair.primary_port) as primary:
            primary.execute("DROP TABLE race_probe")


def test_the_read_paths_check_refuses_a_replica_that_has_not_replayed_the_token(on_replicas, replica_pair):
    """The production check (read_path's pipelined check-then-read) on the replica: behind the
    token, Behind (the read not used); past it, the rows."""
    from webapp.services.reads.path import hot_read
    from webapp.services.reads.replicas import Behind

    app = on_replicas("exact")
    client = Client(app)
    client.write("post", "/segments", {"slug": "CHECKED"})
    replica_pair.caught_up()
    replica_pair.lag(LAG)
    client.add(3, "CHECKED")
    replica = app.extensions["reader"].replicas.replicas[0].engine
    with pytest.raises(Behind) as behind:
        hot_read(replica, 3, check=parse_token(client.token))
    assert behind.value.replayed < parse_token(client.token)
    replica_pair.lag(0)
    replica_pair.caught_up()
    assert [s.slug for s in hot_read(replica, 3, check=parse_token(client.token))] == ["CHECKED"]


@pytest.mark.fault
def test_a_killed_replica_sends_reads_to_the_primary_and_rejoins_once_back(on_replicas, replica_pair):
    """kill -9 of the replica mid-load (two threads reading all along): every read still answers
    200 and right (from the primary, counted as unreachable), with or without a token; started
    again, it serves reads again."""
    app = on_replicas("bounded", REPLICA_MAX_LAG_MS=10_000)
    client = Client(app)
    client.write("post", "/segments", {"slug": "ALIVE"})
    client.add(21, "ALIVE")
    settled(client, replica_pair)
    assert client.slugs(21, token=False) == ["ALIVE"]
    assert client.counts[("replica", "bounded")] >= 1
    stop, answers = threading.Event(), Counter()

    def load() -> None:
        http = app.test_client()
        while not stop.is_set():
            response = http.get("/api/v1/users/21/segments")
            answers[(response.status_code, response.get_data())] += 1

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        replica_pair.kill_replica()
        for user_id in range(22, 27):
            client.add(user_id, "ALIVE")
            assert client.slugs(user_id, token=True) == ["ALIVE"]
            assert client.slugs(user_id, token=False) == ["ALIVE"]
            assert client.lookup_slugs([21, user_id], token=False) == [["ALIVE"]] * 2
        assert client.counts[("primary", "unreachable")] >= 15
        replica_pair.start_replica()
        replica_pair.caught_up()
        time.sleep(0.35)  # REPLICA_RETRY_SECONDS
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    right = (200, b'{"user_id":21,"segments":[{"slug":"ALIVE","source":"explicit","expires_at":null}]}\n')
    assert set(answers) == {right}, answers  # no 5xx, nothing stale, all along
    before = client.counts[("replica", "token")]
    assert client.slugs(26, token=True) == ["ALIVE"]
    assert client.counts[("replica", "token")] == before + 1  # rejoined


def test_bounded_mode_skips_a_replica_past_the_bound(on_replicas, replica_pair):
    """REPLICA_MAX_LAG_MS=300 with 1.5 s of replay lag: right after a write a token-less read may
    come from the replica (stale by less than the bound); 0.4 s later the replica is past the
    bound (its lag measured by WAL position) and the read goes to the primary, right."""
    client = Client(on_replicas("bounded", REPLICA_MAX_LAG_MS=300))
    client.write("post", "/segments", {"slug": "BOUND"})
    settled(client, replica_pair)
    replica_pair.lag(1.5)
    client.add(31, "BOUND")
    written = time.monotonic()
    if client.slugs(31, token=False) == []:
        assert time.monotonic() - written < 0.3  # stale only within the bound
    time.sleep(0.4)
    assert client.slugs(31, token=False) == ["BOUND"]
    assert client.counts[("primary", "lagging")] >= 1


def test_exact_mode_never_reads_a_replica_without_a_token(on_replicas, replica_pair):
    """The default: with a replica configured every token-less read is the primary's, so no answer
    changes (here under 1 s of lag); reads with a token use the replica once it has replayed it."""
    client = Client(on_replicas("exact"))
    client.write("post", "/segments", {"slug": "EXACT"})
    replica_pair.caught_up()
    replica_pair.lag(LAG)
    for user_id in range(40, 45):
        client.add(user_id, "EXACT")
        assert client.slugs(user_id, token=False) == ["EXACT"]
        assert client.seed_slugs(user_id, token=False) == ["EXACT"]
        assert client.lookup_slugs([user_id], token=False) == [["EXACT"]]
    assert client.counts == Counter({("primary", "exact"): 15})
    replica_pair.lag(0)
    replica_pair.caught_up()
    assert client.slugs(44, token=True) == ["EXACT"]
    assert client.counts[("replica", "token")] == 1


def test_a_catalog_change_reaches_replica_reads_only_with_its_token(on_replicas, replica_pair):
    """A rollout moved to 100% (a catalog change) under 1 s of lag: a token-less read from the
    replica still has the old catalog; the read with the change's token has the new one, from
    the primary while the replica is behind and from the replica once it has replayed it."""
    client = Client(on_replicas("bounded", REPLICA_MAX_LAG_MS=10_000))
    client.write("post", "/segments", {"slug": "ROLLED", "rollout_percent": 0})
    settled(client, replica_pair)
    assert client.slugs(50, token=False) == []
    replica_pair.lag(LAG)
    client.write("patch", "/segments/ROLLED", {"rollout_percent": 100})
    assert client.slugs(50, token=False) == []  # the replica's catalog: still 0%
    assert client.slugs(50, token=True) == ["ROLLED"]
    assert client.counts[("primary", "behind")] == 1
    replica_pair.lag(0)
    replica_pair.caught_up()
    assert client.slugs(50, token=True) == ["ROLLED"]
    assert client.slugs(51, token=False) == ["ROLLED"]
    assert client.counts[("replica", "token")] == 1


def test_a_finished_operations_status_carries_a_token_for_its_last_chunk(
    on_replicas, replica_pair, monkeypatch
):
    """A background bulk add (over SYNC_LIMIT ids), run to its end under 1 s of lag: its status,
    once finished, answers with a token, and a read sending it sees the last chunk's users."""
    from webapp.jobs.tasks import run_bulk_operation

    monkeypatch.setattr(bulk, "SYNC_LIMIT", 3)
    monkeypatch.setattr(bulk, "enqueue_after_commit", lambda *args, **kwargs: None)  # (run here instead)
    app = on_replicas("bounded", REPLICA_MAX_LAG_MS=10_000)
    client = Client(app)
    client.write("post", "/segments", {"slug": "BULK"})
    settled(client, replica_pair)
    replica_pair.lag(LAG)
    queued = client.http.post("/api/v1/segments/BULK/members", json={"user_ids": [61, 62, 63, 64, 65]})
    assert queued.status_code == 202, queued.json
    running = client.http.get(f"/api/v1/operations/{queued.json['id']}")
    assert HEADER not in running.headers  # (not finished: no token yet)
    with app.app_context():
        run_bulk_operation(queued.json["id"])
    status = client.http.get(f"/api/v1/operations/{queued.json['id']}")
    assert status.json["status"] == "finished"
    client.token = status.headers[HEADER]
    assert client.slugs(65, token=False) == []  # (the replica, behind)
    assert client.slugs(65, token=True) == ["BULK"]


def test_every_committed_write_answers_with_a_token_and_reads_do_not(api):
    """Without replicas too (the token costs one round trip; clients need not know whether
    replicas exist): each committed write's Segments-Consistency is the primary's WAL position
    after the commit, never going back; reads, and refused writes, have none."""
    first = api.post("/segments", {"slug": "TOKENED"})
    second = api.change(8, ["TOKENED"])
    assert parse_token(first.headers[HEADER]) <= parse_token(second.headers[HEADER])
    assert HEADER not in api.get("/users/8/segments").headers
    assert HEADER not in api.post("/segments", {"slug": "TOKENED"}).headers  # 409: nothing committed


@pytest.mark.parametrize("text", ["", "0/", "G/1", "1/2/3", "123456789/0", "0/0 junk"])
def test_a_malformed_token_is_none(text):
    assert parse_token(text) is None


def test_a_malformed_token_reads_the_primary(on_replicas, replica_pair):
    client = Client(on_replicas("bounded", REPLICA_MAX_LAG_MS=10_000))
    response = client.http.get("/api/v1/users/1/segments", headers={HEADER: "not-a-token"})
    assert response.status_code == 200
    assert client.counts == Counter({("primary", "invalid_token"): 1})


def test_metrics_count_the_replica_reads_and_fallbacks(on_replicas, replica_pair):
    client = Client(on_replicas("exact"))
    client.slugs(1, token=False)
    text = client.http.get("/metrics").data.decode()
    assert 'segments_replica_reads_total{reason="exact",served_by="primary"}' in text


def test_the_readmes_curl_examples_answer_the_same_with_a_lagging_replica_in_exact_mode(
    on_replicas, replica_pair
):
    """The README's sequence (two segments, one at 10%; user 1000 added to both; the hot read)
    against the app with a replica 1 s behind in exact mode: the answers the README states,
    and the same again on a second run (409, then nothing added)."""
    client = Client(on_replicas("exact"))
    replica_pair.lag(LAG)
    http = client.http
    for run in (1, 2):
        first = http.post("/api/v1/segments", json={"slug": "AVITO_VOICE_MESSAGES"})
        second = http.post("/api/v1/segments", json={"slug": "AVITO_DISCOUNT_30", "rollout_percent": 10})
        assert (first.status_code, second.status_code) == ((201, 201) if run == 1 else (409, 409))
        changed = http.post(
            "/api/v1/users/1000/segments",
            json={
                "add": [{"slug": "AVITO_VOICE_MESSAGES", "ttl_seconds": 86400}, "AVITO_DISCOUNT_30"],
                "del": [],
            },
        )
        assert changed.status_code == 200
        # (AVITO_DISCOUNT_30's salt is new on each run of the test: one time in ten its 10%
        # rollout already covers user 1000, and the explicit add is "updated", not "added")
        moved = sorted(changed.json["added"] + changed.json["updated"])
        if run == 1:
            assert "AVITO_VOICE_MESSAGES" in changed.json["added"], changed.json
            assert moved == ["AVITO_DISCOUNT_30", "AVITO_VOICE_MESSAGES"], changed.json
        else:
            assert (changed.json["added"], changed.json["updated"]) == ([], ["AVITO_VOICE_MESSAGES"])
        read = http.get("/api/v1/users/1000/segments")
        assert read.status_code == 200
        assert [s["slug"] for s in read.json["segments"]] == ["AVITO_DISCOUNT_30", "AVITO_VOICE_MESSAGES"]
        assert [s["slug"] for s in http.get("/segment/user?id=1000").json["segments"]] == [
            "AVITO_DISCOUNT_30",
            "AVITO_VOICE_MESSAGES",
        ]
    assert client.counts == Counter({("primary", "exact"): 4})


def test_openfeature_evaluation_follows_the_hot_reads_rules_on_a_replica(on_replicas, replica_pair):
    """OFREP's evaluations read through the same entry point as the hot read, so on replicas they
    follow its rules: without the token a lagging replica answers as it stands (bounded mode),
    with it the answer has the write, single and bulk alike."""
    client = Client(on_replicas("bounded", REPLICA_MAX_LAG_MS=10_000))
    client.write("post", "/segments", {"slug": "FLAGGED"})
    settled(client, replica_pair)
    replica_pair.lag(LAG)
    try:
        client.add(21, "FLAGGED")
        assert client.flag(21, "FLAGGED", token=False) is False  # the replica, not replayed yet
        assert client.flag(21, "FLAGGED", token=True) is True
        assert client.flags(21, token=True) == ["FLAGGED"]
    finally:
        replica_pair.lag(0)
        replica_pair.caught_up()
    assert client.flag(21, "FLAGGED", token=False) is True


def test_a_token_far_past_anything_written_falls_back_to_the_primary_at_once(on_replicas, replica_pair):
    """A token no server will reach for a long time (a client's bug, or a forged one) makes no
    read hang nor fail: every hot read, in front of Flask and in Flask, OpenFeature's included,
    waits REPLICA_WAIT_MS for the replica at most, then reads the primary."""
    client = Client(on_replicas("exact"))
    client.write("post", "/segments", {"slug": "FAR"})
    client.add(31, "FAR")
    client.token = "FFFFFFFF/FFFFFFF0"
    calls = (
        lambda: client.slugs(31, token=True),
        lambda: client.seed_slugs(31, token=True),
        lambda: client.lookup_slugs([31], token=True)[0],
        lambda: ["FAR"] if client.flag(31, "FAR", token=True) else [],
        lambda: client.flags(31, token=True),
    )
    for call in calls:
        started = time.monotonic()
        assert call() == ["FAR"]
        assert time.monotonic() - started < 0.5
    assert client.counts == Counter({("primary", "behind"): len(calls)})


def test_a_replicas_connections_give_up_on_a_silent_network_within_seconds(on_replicas, replica_pair):
    """A replica's host gone without a word (power lost, a partition: no reset, packets
    dropped) must not hold a pooled connection's read until the kernel gives up (minutes, past
    gunicorn's timeout: a 5xx). Its connections carry TCP keepalives and a TCP user timeout,
    so such a read fails within seconds and the replica is skipped (docs/scaling.md)."""
    app = on_replicas("exact")
    engine = app.extensions["reader"].replicas.replicas[0].engine
    connection = engine.raw_connection()
    try:
        parameters = connection.driver_connection.info.get_parameters()
    finally:
        connection.close()
    assert parameters.get("keepalives") == "1"
    assert 0 < int(parameters["tcp_user_timeout"]) <= 5000
    assert int(parameters["keepalives_idle"]) + int(parameters["tcp_user_timeout"]) / 1000 <= 10
