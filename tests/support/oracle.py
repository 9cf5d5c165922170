"""The history oracle: random traffic, then every user checked four ways.

A seeded script of ordinary operations — explicit adds (some with TTLs that expire mid-run)
and removes, swaps inside exclusion groups, rollout raises and cuts, group joins and leaves,
scheduled changes (applied by the job or not), bulk add/remove/replace, deletion and
re-creation of a slug, deletion and restore (members with TTLs, exclusions, groups), the nightly
purge — runs against the real app, sequentially or from
several threads. Afterwards, for every user:

    single read == batch lookup == replay of GET /users/<id>/history
                == the per-user CSV report == the seed's /download rows for that user,

no history entry is doubled (an ``added`` while in, a ``removed`` while out), and (sequential
runs) every read taken during the run equals the history replayed at that moment.

One module for the tests (``tests/services/test_history_oracle.py``) and the soak
(``tests/api/test_soak.py``): the transport is a callable, so the same script runs through Flask's test
client or over HTTP against gunicorn. A failure names the seed and dumps the operation log with
its timings.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

Call = Callable[..., tuple[int, Any]]  # (method, path, json=None, headers=None) -> (status, body)
SETTLE = 2.1  # seconds: the longest TTL (2 s) and the latest schedule (1.8 s) of the script have passed
SEGMENTS = ("O_PLAIN", "O_R1", "O_R2", "O_GA", "O_GB", "O_GC", "O_TTL", "O_RULE")
# Rules (issue 29): O_RULE is created with them; "rules" operations give, change or remove the
# rules of these (plain <-> rules conversions included), "traits" operations write users' traits.
RULED = ("O_RULE", "O_R2", "O_GA", "O_PLAIN")
RULE_SETS: tuple[Any, ...] = (
    [{"conditions": [{"trait": "country", "operator": "str_in", "values": ["RU", "BY"]}]}],
    [
        {"conditions": [{"trait": "plan", "operator": "str_eq", "value": "paid"}]},
        {"conditions": [{"trait": "app", "operator": "semver_gte", "value": "5.2"}]},
    ],
    [{"conditions": [{"trait": "country", "operator": "not_set"}]}],
    None,
)
TRAIT_VALUES = {
    "country": ("RU", "BY", "US"),
    "plan": ("paid", "free"),
    "app": ("5.1", "5.2.0", "6.0.0-beta.1", "10.0"),
}
GROUPS = ("OG1", "OG2")
PERCENTS = (0, 5, 10, 25, 40, 50, 75, 100)
RULE_CAUSES = {"traits", "rules_changed", "created", "rollout", "group", "restored"}  # a rule entry's
OK = {200, 201, 202, 204}
EXPECTED = OK | {404, 409, 422}  # what an operation of this script may answer (never 5xx)


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Logged:
    started: datetime
    ended: datetime
    thread: str
    name: str
    request: Any
    status: int
    answer: Any

    def line(self) -> str:
        took = (self.ended - self.started).total_seconds() * 1000
        return (
            f"{self.started.isoformat()} +{took:.1f}ms [{self.thread}] {self.name} {json.dumps(self.request)}"
            f" -> {self.status} {json.dumps(self.answer)[:300]}"
        )


@dataclass
class Read:
    user_id: int
    started: datetime
    ended: datetime
    slugs: frozenset[str]


@dataclass
class Oracle:
    """One seeded run. ``call`` speaks to the app; ``run_job`` runs a job by name in-process
    (``apply_scheduled_rollouts``, ``purge_expired``) or is None to leave jobs to a worker."""

    call: Call
    seed: int
    users: int = 40
    run_job: Callable[[str], object] | None = None
    log: list[Logged] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _new_groups: Iterator[int] = field(default_factory=itertools.count)

    # -- running ---------------------------------------------------------------------------

    def request(
        self, name: str, method: str, path: str, body: Any = None, expected: set[int] = EXPECTED
    ) -> tuple[int, Any]:
        started = now()
        status, answer = self.call(method, path, body)
        logged = Logged(
            started, now(), threading.current_thread().name, name, [method, path, body], status, answer
        )
        with self._lock:
            self.log.append(logged)
            if status not in expected:
                self.problems.append(f"unexpected status: {logged.line()}")
        return status, answer

    def setup(self) -> None:
        rng = random.Random(self.seed)
        for slug in SEGMENTS:
            body: dict[str, Any] = {"slug": slug}
            if slug in ("O_R1", "O_R2"):
                body["rollout_percent"] = rng.choice((10, 30, 50))
            if slug in ("O_GA", "O_GB"):
                body |= {"exclusion_group": "OG1", "rollout_percent": rng.choice((10, 25, 40))}
            if slug == "O_RULE":
                body |= {"rules": RULE_SETS[0], "rollout_percent": rng.choice((50, 100))}
            self.request("create", "POST", "/api/v1/segments", body)

    def run(self, operations: int, threads: int = 1, *, seconds: float | None = None) -> None:
        """``operations`` random operations, spread over ``threads`` (each its own stream,
        seeded from the run's seed). With ``seconds`` (the soak), each stream goes on until
        that many seconds have passed instead, however many operations that is."""
        deadline = None if seconds is None else time.monotonic() + seconds
        if threads == 1:
            self._stream(random.Random(self.seed), operations, sequential=True, deadline=deadline)
            return
        workers = [
            threading.Thread(
                target=self._stream,
                args=(random.Random(self.seed * 1000 + i), operations // threads),
                kwargs={"sequential": False, "deadline": deadline},
                name=f"writer-{i}",
            )
            for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _stream(
        self, rng: random.Random, operations: int, *, sequential: bool, deadline: float | None = None
    ) -> None:
        done = 0
        while (done < operations) if deadline is None else (time.monotonic() < deadline):
            done += 1
            touched = self._operation(rng)
            if sequential:  # a sample of the users it may have moved, read right after it
                for user_id in rng.sample(touched, min(len(touched), 6)):
                    self.read(user_id)

    def _user(self, rng: random.Random) -> int:
        return rng.randint(1, self.users)

    def _operation(self, rng: random.Random) -> list[int]:
        """One random operation; returns the users whose answer it may have changed (for the
        snapshot reads of a sequential run)."""
        kind = rng.choices(
            (
                "change",
                "swap",
                "rollout",
                "group",
                "schedule",
                "job",
                "bulk",
                "recreate",
                "purge",
                "delete",
                "restore",
                "traits",
                "rules",
                "reevaluate",
            ),
            weights=(40, 8, 12, 5, 6, 4, 10, 3, 3, 2, 3, 16, 5, 5),
        )[0]
        everyone = list(range(1, self.users + 1))
        if kind == "traits":  # a user's traits replaced, merged or deleted
            user = self._user(rng)
            method = rng.choice(("PUT", "PATCH", "PATCH", "DELETE"))
            path = f"/api/v1/users/{user}/traits"
            if method == "DELETE":
                self.request("traits DELETE", method, path, expected=OK)
                return [user]
            traits: dict[str, Any] = {
                key: rng.choice(values) for key, values in TRAIT_VALUES.items() if rng.random() < 0.7
            }
            if method == "PATCH" and rng.random() < 0.3:
                traits[rng.choice(tuple(TRAIT_VALUES))] = None  # deletes the key
            self.request(f"traits {method}", method, path, {"traits": traits}, expected=OK)
            return [user]
        if kind == "rules":  # rules given, changed or removed (a percentage now and then)
            slug = rng.choice(RULED)
            body = {"rules": rng.choice(RULE_SETS)}
            if rng.random() < 0.3:
                body["rollout_percent"] = rng.choice(PERCENTS)
            # (404: deleted meanwhile; 409: scheduled changes pending; 422: no room in its group)
            self.request("rules", "PATCH", f"/api/v1/segments/{slug}", body)
            return everyone
        if kind == "reevaluate":  # the worker runs the queued re-evaluations to their end
            if self.run_job is not None:
                self._job("run_reevaluations")
            return everyone
        if kind == "change":
            user = self._user(rng)
            add, delete = [], []
            for slug in rng.sample(SEGMENTS, rng.randint(1, 3)):
                if rng.random() < 0.55:
                    ttl = rng.choice((None, None, 1, 2))
                    add.append(slug if ttl is None else {"slug": slug, "ttl_seconds": ttl})
                else:
                    delete.append(slug)
            self.request("change", "POST", f"/api/v1/users/{user}/segments", {"add": add, "del": delete})
            return [user]
        if kind == "swap":
            user = self._user(rng)
            a, b = rng.sample(("O_GA", "O_GB", "O_GC"), 2)
            self.request("swap", "POST", f"/api/v1/users/{user}/segments", {"add": [a], "del": [b]})
            return [user]
        if kind == "rollout":
            slug = rng.choice(SEGMENTS)
            self.request(
                "rollout", "PATCH", f"/api/v1/segments/{slug}", {"rollout_percent": rng.choice(PERCENTS)}
            )
            return everyone
        if kind == "group":
            slug = rng.choice(("O_GA", "O_GB", "O_GC", "O_R2"))
            # a group of its own now and then: joining a group that does not exist yet creates it
            # in the same transaction, while other writers wait on its locks (a TTL'd add among
            # them once outlived its TTL there: history said in, reads said out)
            group = rng.choice((*GROUPS, None, f"OGN{next(self._new_groups)}"))
            body: dict[str, Any] = {"exclusion_group": group}
            if rng.random() < 0.3:
                body["rollout_percent"] = rng.choice(PERCENTS)
            self.request("group", "PATCH", f"/api/v1/segments/{slug}", body)
            return everyone
        if kind == "schedule":
            slug = rng.choice(SEGMENTS)
            at = (now() + timedelta(seconds=rng.uniform(0.3, 1.8))).isoformat()
            self.request(
                "schedule",
                "POST",
                f"/api/v1/segments/{slug}/schedule",
                {"at": at, "rollout_percent": rng.choice(PERCENTS)},
            )
            return []  # it takes effect later: reads around it see either side
        if kind == "job":
            if self.run_job is not None:
                self._job("apply_scheduled_rollouts")
            return []
        if kind == "bulk":
            slug = rng.choice(SEGMENTS)
            ids = sorted(rng.sample(everyone, rng.randint(1, 6)))
            method = rng.choice(("POST", "POST", "DELETE", "PUT"))
            body: dict[str, Any] = {"user_ids": ids}
            if method != "DELETE" and rng.random() < 0.3:
                body["ttl_seconds"] = rng.choice((1, 2))
            self.request(f"bulk {method}", method, f"/api/v1/segments/{slug}/members", body)
            return everyone if method == "PUT" else ids
        if kind == "recreate":
            slug = rng.choice(SEGMENTS)
            self.request("delete", "DELETE", f"/api/v1/segments/{slug}")
            body = {"slug": slug}
            if rng.random() < 0.5:
                body["rollout_percent"] = rng.choice(PERCENTS)
            if slug in ("O_GA", "O_GB", "O_GC") and rng.random() < 0.5:
                body["exclusion_group"] = rng.choice(GROUPS)
            if slug in RULED and rng.random() < 0.7:  # created with rules (no rollout_percent: 100%)
                body["rules"] = rng.choice(RULE_SETS[:-1])
                if rng.random() < 0.5:
                    body.pop("rollout_percent", None)
            self.request("create", "POST", "/api/v1/segments", body)
            return everyone
        if kind == "delete":  # deleted for a while: a later restore may bring it back
            self.request("delete", "DELETE", f"/api/v1/segments/{rng.choice(SEGMENTS)}")
            return everyone
        if kind == "restore":  # 409 when the slug was created again meanwhile, 404 if never deleted
            self.request("restore", "POST", f"/api/v1/segments/{rng.choice(SEGMENTS)}/restore")
            return everyone
        if self.run_job is not None:  # purge
            self._job("purge_expired")
        return []

    def _job(self, name: str) -> None:
        assert self.run_job is not None
        started = now()
        self.run_job(name)
        with self._lock:
            self.log.append(
                Logged(started, now(), threading.current_thread().name, f"job {name}", None, 0, None)
            )

    def read(self, user_id: int) -> frozenset[str]:
        started = now()
        status, body = self.call("GET", f"/api/v1/users/{user_id}/segments", None)
        assert status == 200, body
        slugs = frozenset(s["slug"] for s in body["segments"])
        self.reads.append(Read(user_id, started, now(), slugs))
        return slugs

    # -- checking --------------------------------------------------------------------------

    def check(
        self,
        *,
        report_csv: Callable[[int], list[tuple]] | None = None,
        seed_rows: Callable[[int], list[tuple]] | None = None,
    ) -> list[str]:
        """Every user four ways (five with the seed's download); returns the problems found."""
        problems = list(self.problems)
        ids = list(range(1, self.users + 1))
        status, batch = self.call("POST", "/api/v1/users/segments:lookup", {"user_ids": ids})
        assert status == 200, batch
        looked_up = {u["user_id"]: frozenset(s["slug"] for s in u["segments"]) for u in batch["users"]}
        for user_id in ids:
            read = self.read(user_id)
            status, body = self.call("GET", f"/api/v1/users/{user_id}/history", None)
            assert status == 200, body
            entries = [
                (e["segment"], e["operation"], parse_time(e["occurred_at"]), e["reason"])
                for e in body["items"]
            ]
            problems += [f"user {user_id}: {p}" for p in doubled(entries)]
            problems += [f"user {user_id}: {p}" for p in self._check_causes(user_id, body["items"])]
            replayed = replay(entries)
            if not read == looked_up[user_id] == replayed:
                problems.append(
                    f"user {user_id}: read {sorted(read)} lookup {sorted(looked_up[user_id])} "
                    f"history replay {sorted(replayed)}"
                )
            rows = [(slug, op, at) for slug, op, at, _ in entries]
            if report_csv is not None and (csv_rows := report_csv(user_id)) != rows:
                problems.append(f"user {user_id}: CSV report {csv_rows} != history {rows}")
            if seed_rows is not None:
                expected = [(slug, op, at.replace(microsecond=0)) for slug, op, at in rows]
                if (got := seed_rows(user_id)) != expected:
                    problems.append(f"user {user_id}: seed download {got} != history {expected}")
        if self.reads and not problems:
            problems += self._check_snapshots()
        return problems

    def _check_causes(self, user_id: int, items: list[dict[str, Any]]) -> list[str]:
        """Every ``rule`` entry names the change that caused it (issue 29, item 4), never later
        than the entry, and that change happened: a trait change of this user at the cause's
        instant with the same keys and actor (its trait history), or a request of this run that
        changed that segment (created, patched or restored it) and was under way at that instant
        (when this oracle made the traffic: ``check`` of another test's traffic has no log)."""
        problems: list[str] = []
        rule_items = [e for e in items if e["reason"] == "rule"]
        if not rule_items:
            return problems
        _, traits_body = self.call("GET", f"/api/v1/users/{user_id}/traits/history", None)
        trait_changes: dict[datetime, tuple[set[str], set[str]]] = {}
        for change in traits_body["items"]:
            keys, actors = trait_changes.setdefault(parse_time(change["occurred_at"]), (set(), set()))
            keys.update(change["keys"])
            actors.add(change["actor"])
        for entry in rule_items:
            cause, at = entry["cause"], parse_time(entry["occurred_at"])
            where = f"{entry['segment']} {entry['operation']} at {entry['occurred_at']}"
            if cause is None or cause["kind"] not in RULE_CAUSES:
                problems.append(f"rule entry {where} has cause {cause}")
                continue
            caused_at = parse_time(cause["at"])
            if caused_at > at:
                problems.append(f"rule entry {where}: its cause {cause} is later")
            if cause["kind"] == "traits":
                keys, actors = trait_changes.get(caused_at, (set(), set()))
                if not actors or sorted(keys) != cause["keys"] or actors != {cause["actor"]}:
                    problems.append(
                        f"rule entry {where}: cause {cause}, trait history then {keys} by {actors}"
                    )
            elif self.log and not any(  # (traffic of this run's own: a check of others' has no log)
                e.started <= caused_at <= e.ended
                and e.status in OK
                and cause["kind"] in _segment_causes(e, cause["segment"])
                and cause["actor"] == "api"  # (the script's requests carry no X-Actor)
                for e in self.log
            ):
                problems.append(f"rule entry {where}: no request of the run making its cause {cause}")
        return problems

    def _check_snapshots(self) -> list[str]:
        """Every read taken during a sequential run equals the history at that moment (any
        moment of the read's own span)."""
        problems = []
        histories: dict[int, list[tuple[str, str, datetime, str]]] = {}
        for snap in self.reads:
            if snap.user_id not in histories:
                _, body = self.call("GET", f"/api/v1/users/{snap.user_id}/history", None)
                histories[snap.user_id] = [
                    (e["segment"], e["operation"], parse_time(e["occurred_at"]), e["reason"])
                    for e in body["items"]
                ]
            entries = histories[snap.user_id]
            moments = [snap.started] + [at for _, _, at, _ in entries if snap.started < at <= snap.ended]
            possible = [replay([e for e in entries if e[2] <= moment]) for moment in moments]
            if snap.slugs not in possible:
                problems.append(
                    f"user {snap.user_id}: read {sorted(snap.slugs)} at {snap.started.isoformat()} but history "
                    f"then says {sorted(possible[0])}"
                )
        return problems

    def failure(self, problems: Iterable[str]) -> str:
        """The message of a failed run: the seed, the problems and the operation log."""
        listed = list(problems)
        head = [f"seed {self.seed}: {len(listed)} problem(s)", *listed[:30], "", "operation log:"]
        return "\n".join(head + [entry.line() for entry in sorted(self.log, key=lambda e: e.started)])


def _segment_causes(logged: Logged, slug: str) -> set[str]:
    """The cause kinds a request of the script may give the rule entries of segment ``slug``'s
    re-evaluation: its creation, its restore, or a PATCH of its rules (``rules_changed``), its
    percentage (``rollout``) or its group (``group``): one of those the PATCH named."""
    method, path, body = logged.request
    if method == "POST" and path == "/api/v1/segments":
        return {"created"} if isinstance(body, dict) and body.get("slug") == slug else set()
    if (method, path) == ("POST", f"/api/v1/segments/{slug}/restore"):
        return {"restored"}
    if (method, path) != ("PATCH", f"/api/v1/segments/{slug}") or not isinstance(body, dict):
        return set()
    named = (("rules", "rules_changed"), ("rollout_percent", "rollout"), ("exclusion_group", "group"))
    return {kind for key, kind in named if key in body}  # (rules given as they were: no rules_changed)


def replay(entries: Iterable[tuple]) -> frozenset[str]:
    """The segments a history (oldest first) leaves the user in."""
    inside: set[str] = set()
    for slug, operation, *_ in entries:
        (inside.add if operation == "added" else inside.discard)(slug)
    return frozenset(inside)


def doubled(entries: Iterable[tuple]) -> list[str]:
    """Entries that change nothing: an ``added`` while in, a ``removed`` while out, or out of
    time order."""
    problems, inside, last = [], set(), None
    for slug, operation, at, reason in entries:
        if last is not None and at < last:
            problems.append(f"{slug} {operation} at {at.isoformat()} is before the entry above it")
        last = at
        if (operation == "added") == (slug in inside):
            problems.append(f"doubled: {slug} {operation} ({reason}) at {at.isoformat()}")
        (inside.add if operation == "added" else inside.discard)(slug)
    return problems


def csv_history(text: str) -> list[tuple[str, str, datetime]]:
    """A /api/v1 history report's rows (``user_id;segment;operation;timestamp``)."""
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    return [(slug, op, parse_time(at)) for _, slug, op, at in rows[1:]]


def seed_history(text: str) -> list[tuple[str, str, datetime]]:
    """The seed's CSV rows (``user,segment,operation,date``; ``deleted`` for removed)."""
    rows = list(csv.reader(io.StringIO(text)))
    return [
        (
            slug,
            "removed" if op == "deleted" else op,
            datetime.strptime(at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC),
        )
        for _, slug, op, at in rows[1:]
    ]


def wait(seconds: float) -> None:
    time.sleep(seconds)
