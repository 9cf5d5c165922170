"""User id lists pasted or uploaded on the dashboard: one pass, clear errors."""
from __future__ import annotations

import re
from collections.abc import Iterable

from webapp.errors import ValidationFailed, detail
from webapp.services.common import MAX_USER_ID

SEPARATORS = re.compile(rb"[\s,;]+")
MAX_REPORTED = 20


def parse_user_ids(lines: Iterable[bytes | str], limit: int, field: str = "user_ids") -> list[int]:
    """Ids separated by commas, semicolons, spaces or newlines; a first line that is a
    header (``user_id``) is skipped. Raises ValidationFailed naming the first bad tokens."""
    ids: list[int] = []
    problems: list[dict | None] = []  # None: a problem past the first MAX_REPORTED, counted only
    for number, line in enumerate(lines, 1):
        raw = line.encode() if isinstance(line, str) else line
        for token in SEPARATORS.split(raw.strip()):
            if not token:
                continue
            if token.isdigit() and 0 < int(token) <= MAX_USER_ID:
                ids.append(int(token))
            elif number == 1 and not token[:1].isdigit() and not ids and not problems:
                break  # a header line such as "user_id"
            elif len(problems) < MAX_REPORTED:
                problems.append(detail(field, f"line {number}: {token[:30].decode(errors='replace')!r} "
                                              "is not a user id (1..2^63-1)"))
            else:
                problems.append(None)
        if len(ids) > limit:
            raise ValidationFailed(f"at most {limit} user ids at once", [detail(field, "too many ids")])
    if problems:
        shown = [p for p in problems if p]
        raise ValidationFailed(f"{len(problems)} invalid user id(s); nothing was added", shown)
    if not ids:
        raise ValidationFailed("no user ids given", [detail(field, "paste ids or choose a file")])
    return ids
