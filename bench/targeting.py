"""What evaluating a segment's rules costs per user, in-process: ``python -m bench.targeting``.

``RuleSet.match`` over 200,000 generated users' traits (8 traits each: strings, numbers,
versions, dates), best of 5 rounds (the least disturbed by the machine), for:

- a typical rule of 3 conditions: country in [RU, BY], plan = paid, app_version >= 5.2;
- a set of 10 such rules (other countries, plans, versions, a date, a number, a contains), most
  users matching none, so every rule is tried;
- the same 10 rules with case-insensitive strings.

Prints microseconds per evaluation. With ``--sql DATABASE_URL`` it also counts the matching users
of the same generated traits in a temporary jsonb table (PostgreSQL, COPY-ed in), timing
``SELECT count(*) WHERE rules.sql(...)`` for each set (best of 3).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable

from webapp.services.targeting import RuleSet, parse

USERS = 200_000
COUNTRIES = ["RU", "BY", "KZ", "AM", "GE", "UZ", "DE", "RS"]
PLANS = ["free", "paid", "trial", "business"]
VERSIONS = ["5.0", "5.1.2", "5.2", "5.2.1", "5.3.0-beta.1", "5.10.0", "4.9.9", "6.0"]


def users(n: int, seed: int = 29) -> list[dict[str, str | int | float | bool]]:
    rnd = random.Random(seed)
    return [
        {
            "country": rnd.choice(COUNTRIES),
            "plan": rnd.choice(PLANS),
            "app_version": rnd.choice(VERSIONS),
            "signup": f"20{rnd.randint(20, 26)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T10:00:00Z",
            "age": rnd.randint(14, 80),
            "orders": rnd.random() * 100,
            "email": f"user{i}@{rnd.choice(['mail.ru', 'gmail.com', 'yandex.ru'])}",
            "beta": rnd.random() < 0.1,
        }
        for i in range(n)
    ]


def typical() -> RuleSet:
    return parse(
        [
            {
                "conditions": [
                    {"trait": "country", "operator": "str_in", "values": ["RU", "BY"]},
                    {"trait": "plan", "operator": "str_eq", "value": "paid"},
                    {"trait": "app_version", "operator": "semver_gte", "value": "5.2"},
                ]
            }
        ]
    )


def ten(case_insensitive: bool = False) -> RuleSet:
    rules = []
    for i in range(10):
        rules.append(
            {
                "conditions": [
                    {
                        "trait": "country",
                        "operator": "str_in",
                        "values": [COUNTRIES[i % 8], COUNTRIES[(i + 3) % 8]],
                        **({"case_insensitive": True} if case_insensitive else {}),
                    },
                    {"trait": "plan", "operator": "str_eq", "value": PLANS[i % 4]},
                    {"trait": "app_version", "operator": "semver_gte", "value": f"5.{i}"},
                    {"trait": "signup", "operator": "date_after", "value": f"20{20 + i % 7}-06-01"},
                    {"trait": "age", "operator": "num_gte", "value": 18 + i},
                    {"trait": "email", "operator": "str_ends_with", "value": ".ru"},
                    {"trait": "beta", "operator": "bool_eq", "value": True},  # rare: most users match no rule
                ]
            }
        )
    return parse(rules)


def per_eval(rules: RuleSet, population: list[dict[str, str | int | float | bool]]) -> tuple[float, int]:
    match: Callable[..., int | None] = rules.match
    best, matched = float("inf"), 0
    for _ in range(5):
        start = time.perf_counter()
        matched = sum(1 for t in population if match(t) is not None)
        best = min(best, time.perf_counter() - start)
    return best / len(population) * 1e6, matched


def sql_counts(
    url: str, population: list[dict[str, str | int | float | bool]], sets: dict[str, RuleSet]
) -> None:
    import io

    import sqlalchemy as sa

    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE bench_traits (id int, traits jsonb NOT NULL)"))
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur, cur.copy("COPY bench_traits FROM STDIN") as copy:
            buf = io.StringIO()
            for i, t in enumerate(population):
                buf.write(f"{i}\t{json.dumps(t).replace(chr(92), chr(92) * 2)}\n")
            copy.write(buf.getvalue())
        conn.execute(sa.text("ANALYZE bench_traits"))
        table = sa.table("bench_traits", sa.column("traits"))
        floor = min(_timed(conn, sa.select(sa.func.count()).select_from(table)) for _ in range(3))
        print(f"  count(*) of {len(population):,} rows, no filter: {floor * 1000:.0f} ms")
        for name, rules in sets.items():
            found = rules.sql(table.c.traits)
            query = sa.select(sa.func.count()).select_from(table).where(found.where)
            count = conn.execute(query).scalar()
            best = min(_timed(conn, query) for _ in range(3))
            print(f"  {name}: {best * 1000:.0f} ms, {count:,} rows (exact: {found.exact})")
    engine.dispose()


def _timed(conn: object, query: object) -> float:
    start = time.perf_counter()
    conn.execute(query).scalar()  # type: ignore[attr-defined]
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    population = users(USERS)
    sets = {
        "typical rule, 3 conditions": typical(),
        "10 rules": ten(),
        "10 rules, case-insensitive": ten(True),
    }
    print(f"RuleSet.match over {USERS:,} users (best of 5):")
    for name, rules in sets.items():
        micros, matched = per_eval(rules, population)
        print(f"  {name}: {micros:.2f} µs per evaluation ({matched:,} matched)")
    if len(argv) > 1 and argv[0] == "--sql":
        print("SQL count over the same traits (best of 3):")
        sql_counts(argv[1], population, sets)


if __name__ == "__main__":
    main(sys.argv[1:])
