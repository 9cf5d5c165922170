"""Validation limits and formats: the one place both the API schemas and the services read them."""

from __future__ import annotations

import re

SLUG_PATTERN = r"[A-Z][A-Z0-9_]{0,63}"
SLUG_RE = re.compile(SLUG_PATTERN)  # always used with fullmatch: "SLUG\n" is not a slug
SLUG_HELP = "upper-case letters, digits and underscores, starting with a letter (at most 64)"
MAX_SLUG_INPUT = 200  # longer strings are refused before the slug rule is even checked

MAX_USER_ID = 2**63 - 1  # users are external positive bigint ids
MAX_TTL_SECONDS = 10 * 366 * 24 * 3600  # ten years
MAX_TTL_DAYS = 3660
MAX_DESCRIPTION = 2000

MAX_ITEMS_PER_CHANGE = 1000  # add + del items in one per-user change
MAX_BULK_IDS = 1_000_000  # ids in one bulk add (API or dashboard upload)
MAX_LOOKUP_IDS = 1000  # users in one batch lookup
PERIOD_RE = re.compile(r"(\d{4})-(\d{2})")


def is_slug(value: object) -> bool:
    return isinstance(value, str) and SLUG_RE.fullmatch(value) is not None
