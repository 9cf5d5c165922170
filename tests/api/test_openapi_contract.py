"""The OpenAPI document is the whole contract (issue 21 C): every route of /api/v1 and of the
seed's paths is in it, with every method, and each operation declares every status that the
mechanisms in front of every view can answer."""

from __future__ import annotations

import re

# What can answer before (or around) any view: 400 a Host the service does not own, 401 no or an
# unknown token, 403 a token whose scope does not cover the call, 429 a rate limit, 503 the
# database unreachable (DatabaseUnavailable).
EVERY_CALL = {"400", "401", "403", "429", "503"}
# A write's body: 409 its Idempotency-Key still in flight, 413 too large, 415 not JSON.
EVERY_WRITE = {"409", "413", "415"}
# /api/v1 only: 422 validation (a query parameter too) and an Idempotency-Key reused for another
# request; 404 a path naming nothing.
V1 = {"422"}


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_route_and_status_is_documented(app, client):
    document = client.get("/api/openapi.json").json
    missing, undeclared, seen = [], [], 0
    for rule in app.url_map.iter_rules():
        v1 = rule.rule.startswith("/api/v1/")
        if not v1 and not rule.endpoint.startswith("api_compat."):
            continue
        path = openapi_path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            seen += 1
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:
                missing.append(f"{method} {path}")
                continue
            expected = set(EVERY_CALL)
            if method != "GET":
                expected |= EVERY_WRITE
            if v1:
                expected |= V1 | ({"404"} if rule.arguments else set())
            if lacking := expected - set(operation["responses"]):
                undeclared.append(f"{method} {path}: {sorted(lacking)}")
    assert not missing, f"routes not in the OpenAPI document: {missing}"
    assert not undeclared, "statuses the route can answer but does not declare:\n" + "\n".join(undeclared)
    assert seen >= 29


def test_the_csv_download_is_documented_as_csv(client):
    document = client.get("/api/openapi.json").json
    download = document["paths"]["/api/v1/reports/{report_id}.csv"]["get"]
    assert set(download["responses"]["200"]["content"]) == {"text/csv"}
    assert download["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    assert "reports" in download["tags"]
