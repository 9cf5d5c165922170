from hashlib import blake2b

import pytest

from webapp.services.rollout import buckets as rollout


def test_bucket_matches_the_documented_formula():
    digest = blake2b(b"abc:42", digest_size=8).digest()
    assert rollout.bucket("abc", 42, scheme=1) == int.from_bytes(digest, "big") % 10_000


def test_bucket_is_stable_and_in_range():
    buckets = [rollout.bucket("salt", uid) for uid in range(1, 2001)]
    assert buckets == [rollout.bucket("salt", uid) for uid in range(1, 2001)]
    assert all(0 <= b < 10_000 for b in buckets)


def test_raising_the_percentage_keeps_earlier_members():
    users = range(1, 20_001)
    at10 = {u for u in users if rollout.in_rollout("s1", u, 1000)}
    at20 = {u for u in users if rollout.in_rollout("s1", u, 2000)}
    assert at10 < at20
    # The share is close to the percentage (binomial sd for n=20000, p=0.1 is ~42 users).
    assert abs(len(at10) - 2000) < 250
    assert abs(len(at20) - 4000) < 300


def test_salt_changes_the_population():
    a = {u for u in range(1, 5001) if rollout.in_rollout("a", u, 5000)}
    b = {u for u in range(1, 5001) if rollout.in_rollout("b", u, 5000)}
    assert a != b and 0.3 < len(a & b) / len(a) < 0.7


def test_zero_and_full_rollout():
    assert not any(rollout.in_rollout("x", u, 0) for u in range(1, 1000))
    assert all(rollout.in_rollout("x", u, 10_000) for u in range(1, 1000))


@pytest.mark.parametrize("value, expected", [(0, 0), (100, 10_000), (12.5, 1250), ("0.01", 1), (33.33, 3333)])
def test_percent_to_basis_points(value, expected):
    assert rollout.percent_to_basis_points(value) == expected


@pytest.mark.parametrize("value", [-1, 100.01, 12.345, True, None, "abc", float("nan"), float("inf")])
def test_percent_rejects(value):
    with pytest.raises(ValueError):
        rollout.percent_to_basis_points(value)


def test_the_hot_paths_loop_agrees_with_bucket():
    salts = [rollout.new_salt() for _ in range(21)]
    triples = [
        (salt, rollout.prefix(salt), basis_points)
        for salt, basis_points in zip(salts, range(0, 10_001, 500), strict=True)
    ]
    for user_id in (1, 42, 2**63 - 1, *range(1000, 1200)):
        assert list(rollout.covering(triples, user_id)) == [
            salt
            for salt, _, basis_points in triples
            if rollout.in_rollout(salt, user_id, basis_points, scheme=1)
        ]


def test_scheme_2_is_uniform_independent_and_vectorised_exactly():
    import numpy as np

    users = list(range(1, 100_001))
    hashes = rollout.user_hashes(users)
    overlaps = []
    for i in range(10):
        a = rollout.mix_buckets(hashes ^ np.uint64(rollout.key(f"a{i}"))) < 1000
        b = rollout.mix_buckets(hashes ^ np.uint64(rollout.key(f"b{i}"))) < 1000
        assert 9_500 < a.sum() < 10_500
        overlaps.append(int((a & b).sum()))
    assert 900 < sum(overlaps) / len(overlaps) < 1100  # independent salts: 1% of users in two 10% rollouts
    sample = users[:500]
    vectorised = rollout.mix_buckets(rollout.user_hashes(sample) ^ np.uint64(rollout.key("s"))).tolist()
    assert vectorised == [rollout.bucket("s", u) for u in sample]  # the scalar and NumPy forms agree
    assert rollout.share(rollout.Rule(2, "s", ((0, 2500),)), sample) == sum(b < 2500 for b in vectorised)
