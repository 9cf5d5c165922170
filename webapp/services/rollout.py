"""Percentage rollout: a stable hash of (segment salt, user id) against a threshold.

Pure functions, no database: the same scheme as Unleash/GrowthBook (see DESIGN.md).
"""
from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from hashlib import blake2b
from typing import Any, TypeVar

BUCKETS = 10_000
T = TypeVar("T")


@lru_cache(maxsize=20_000)
def prefix(salt: str) -> Any:
    """blake2b already fed with "salt:" (copying it is cheaper than hashing the prefix again)."""
    return blake2b(f"{salt}:".encode(), digest_size=8)


def bucket(salt: str, user_id: int) -> int:
    """The user's bucket in 0..9999: blake2b(f"{salt}:{user_id}", digest_size=8) mod 10000."""
    hasher = prefix(salt).copy()
    hasher.update(str(user_id).encode())
    return int.from_bytes(hasher.digest(), "big") % BUCKETS


def covering(rollouts: Iterable[tuple[T, Any, int]], user_id: int) -> Iterator[T]:
    """The items whose rollout includes the user, for (item, prefix(salt), basis points)
    triples: :func:`bucket` in a tight loop (the hot read path evaluates every rollout)."""
    key = str(user_id).encode()
    for item, salted, basis_points in rollouts:
        hasher = salted.copy()
        hasher.update(key)
        if int.from_bytes(hasher.digest(), "big") % BUCKETS < basis_points:
            yield item


def in_rollout(salt: str, user_id: int, basis_points: int) -> bool:
    """True when a rollout of ``basis_points`` (0..10000) includes the user."""
    return basis_points > 0 and bucket(salt, user_id) < basis_points


def new_salt() -> str:
    return secrets.token_hex(8)


def percent_to_basis_points(value) -> int:
    """0..100 with at most two decimals -> 0..10000; ValueError with a readable message."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError("must be a number between 0 and 100")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a number between 0 and 100") from None
    if not number.is_finite() or number < 0 or number > 100:
        raise ValueError("must be a number between 0 and 100")
    scaled = number * 100
    if scaled != scaled.to_integral_value():
        raise ValueError("at most two decimal places")
    return int(scaled)


def sample_share(salt: str, basis_points: int, sample: int = 10_000) -> int:
    """How many of the user ids 1..sample a rollout of ``basis_points`` includes (a preview)."""
    if basis_points <= 0:
        return 0
    return sum(1 for user_id in range(1, sample + 1) if bucket(salt, user_id) < basis_points)
