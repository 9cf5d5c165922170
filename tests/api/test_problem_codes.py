"""Problems carry codes (issue 23): every error detail names its kind of problem with a stable
``code`` and the parameters that describe it; the dashboard words a problem from a table keyed
by code, never from the services' English."""

from __future__ import annotations

import ast
from pathlib import Path

from webapp.web import messages

ROOT = Path(__file__).resolve().parents[2] / "webapp"


def _calls(path: Path, name: str) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == name)
            or (isinstance(node.func, ast.Attribute) and node.func.attr == name)
        )
    ]


def _sources(*parts: str) -> list[Path]:
    return sorted(p for part in parts for p in (ROOT / part).rglob("*.py"))


def test_every_detail_call_names_its_code():
    missing = [
        f"{path.relative_to(ROOT.parent)}:{call.lineno}"
        for path in sorted(ROOT.rglob("*.py"))
        for call in _calls(path, "detail")
        if not any(keyword.arg == "code" for keyword in call.keywords)
    ]
    assert missing == []


def _codes_used(paths: list[Path]) -> dict[str, str]:
    """Every code written as a literal: detail(code="..."), Problem("...", ...), Invalid("...", ...)."""
    found: dict[str, str] = {}
    for path in paths:
        for name in ("detail", "Problem", "Invalid"):
            for call in _calls(path, name):
                values = [k.value for k in call.keywords if k.arg == "code"]
                if name != "detail" and call.args:
                    values.append(call.args[0])
                for value in values:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        found.setdefault(value.value, f"{path.relative_to(ROOT.parent)}:{call.lineno}")
    return found


def test_every_code_the_services_and_the_dashboard_use_has_wording():
    paths = [ROOT / "rules.py", *_sources("services", "web")]
    used = _codes_used(paths)
    assert {"unknown_segment", "group_full", "slug_invalid", "date_naive", "percent_invalid"} <= set(used)
    assert {code: where for code, where in used.items() if code not in messages.WORDING} == {}


def test_codes_are_snake_case():
    used = _codes_used(sorted(ROOT.rglob("*.py")))
    assert [code for code in used if not code.replace("_", "").isalpha() or code != code.lower()] == []


def test_no_regex_reads_service_messages_on_the_dashboard():
    for name in ("messages.py", "plans.py", "helpers.py", "segments.py", "users.py"):
        tree = ast.parse((ROOT / "web" / name).read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "re" not in imported, name


def test_wording_comes_from_the_code_and_its_parameters_not_the_message():
    full = {
        "field": "rollout_percent",
        "message": "reworded by the service, whatever it says now",
        "code": "group_full",
        "exclusion_group": "PROMO",
        "max_percent": 12.5,
        "free_percent": 12.5,
    }
    assert messages.words(full) == (
        "Group PROMO: at most 12.5% for this segment (12.5% is free); its segments share 100% of "
        "users. To go higher, lower another segment of PROMO first."
    )
    unknown = {"field": "slug", "message": "gone", "code": "unknown_segment", "slug": "PROMO"}
    assert messages.words(unknown, "PROMO") == "There is no segment called PROMO."
    assert messages.words(unknown, "promo") == "Slugs are written in upper case."
    # a code without wording (an API-only one) shows the service's message as a sentence
    assert messages.words({"message": "must be application/json", "code": "content_type_invalid"}) == (
        "Must be application/json."
    )


def test_the_envelope_carries_codes_and_parameters(api):
    refused = api.change(1001, add=["NOPE_CODES"])
    assert refused.status_code == 422
    (item,) = refused.json["error"]["details"]
    assert item == {
        "field": "add",
        "message": "no such segment",
        "code": "unknown_segment",
        "slug": "NOPE_CODES",
    }
    assert refused.json["error"]["code"] == "validation_failed"  # top-level codes stay as they are

    api.segment("CODES_A", exclusion_group="CODESG", rollout_percent=70)
    full = api.post("/segments", {"slug": "CODES_B", "exclusion_group": "CODESG", "rollout_percent": 50})
    assert full.status_code == 422, full.json
    (item,) = full.json["error"]["details"]
    assert item["code"] == "group_full" and item["field"] == "rollout_percent"
    assert (item["exclusion_group"], item["max_percent"], item["free_percent"]) == ("CODESG", 30, 30)

    twice = api.change(1001, add=["CODES_A", "CODES_A"], delete=["CODES_A", "bad slug"])
    codes = [d["code"] for d in twice.json["error"]["details"]]
    assert codes == ["slug_twice", "in_both_lists", "slug_invalid"]

    schema = api.post("/segments", {"slug": 5})
    assert schema.status_code == 422 and all(d["code"] for d in schema.json["error"]["details"])


def test_the_openapi_document_states_the_code_of_each_detail(client):
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]
    (name,) = [name for name in schemas if name.split(".")[-1] == "ErrorDetail"]
    detail = schemas[name]
    assert set(detail["required"]) == {"field", "message", "code"}
    assert "code" in detail["properties"] and detail.get("additionalProperties", True) is not False
    (body,) = [schemas[name] for name in schemas if name.split(".")[-1] == "ErrorBody"]
    assert body["properties"]["details"]["items"]["$ref"].endswith("ErrorDetail")
