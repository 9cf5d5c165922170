"""The OpenAPI document is served and every documented operation honours it (schemathesis)."""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings


def test_openapi_document(client):
    document = client.get("/api/openapi.json").json
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/users/{user_id}/segments" in document["paths"]
    assert "/segment/user" in document["paths"]
    page = client.get("/api/docs")
    assert page.status_code == 200 and b"vendor/swagger-ui/swagger-ui-bundle.js" in page.data
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def operations(app):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
def test_every_operation_conforms(app, db_session):
    """No 5xx, documented status codes and content types, bodies matching their schemas."""
    checked, failed = [], []
    for operation in operations(app):
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate()

        try:
            check()
        except BaseException as exc:  # (an ExceptionGroup) collect every failure, not just the first
            failed.append(f"{operation.label}: {str(exc)[:600]}")
        checked.append(operation.label)
    assert not failed, "\n\n".join(failed)
    assert len(checked) >= 15, checked
