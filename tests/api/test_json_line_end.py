"""Every JSON body ends with one newline (issue 24, item 8: curl's output no longer runs into the
prompt): the hot reads in front of Flask and through it, the batch lookup, pydantic-written
answers, Flask's own JSON, the error envelope (API and seed paths), the probes and the OpenAPI
document. Content-Length counts the newline; the body before it is the JSON it always was."""

import json

import pytest

from webapp.api.hot_routes import SEED_USER_SEGMENTS, USER_SEGMENTS


def ends_its_line(response) -> bytes:
    body = response.get_data()
    assert response.mimetype == "application/json", (response.status_code, body[:200])
    assert body.endswith(b"\n") and not body.endswith(b"\n\n"), (response.request.path, body[-40:])
    assert b"\n" not in body[:-1]  # one line: the JSON is compact as before, only the end is new
    assert int(response.headers["Content-Length"]) == len(body)
    json.loads(body)
    return body


@pytest.fixture
def seeded(api):
    api.segment("AVITO_VOICE_MESSAGES")
    api.segment("AVITO_DISCOUNT_30", rollout_percent=100)
    assert api.change(1000, add=["AVITO_VOICE_MESSAGES"]).status_code == 200
    return api


def test_the_hot_reads_end_their_line_in_front_of_flask_and_through_it(seeded, client):
    fast = client.get(USER_SEGMENTS.url(1000))
    body = ends_its_line(fast)
    assert body == (
        b'{"user_id":1000,"segments":[{"slug":"AVITO_DISCOUNT_30","source":"rollout","expires_at":null},'
        b'{"slug":"AVITO_VOICE_MESSAGES","source":"explicit","expires_at":null}]}\n'
    )
    # The same read answered by the Flask view (a query string the layer in front leaves to Flask).
    slow = client.get(USER_SEGMENTS.url(1000) + "?via=flask")
    assert ends_its_line(slow) == body
    seed = client.get(SEED_USER_SEGMENTS.url(1000))
    assert ends_its_line(seed) == (
        b'{"user_id":1000,"segments":[{"slug":"AVITO_DISCOUNT_30"},{"slug":"AVITO_VOICE_MESSAGES"}]}\n'
    )
    assert client.get(SEED_USER_SEGMENTS.url(1000) + "&via=flask").get_data() == seed.get_data()


def test_every_kind_of_json_answer_ends_its_line(seeded, client):
    api = seeded
    answers = [
        api.post("/users/segments:lookup", {"user_ids": [1000, 7]}),  # the batch read
        api.get("/segments"),  # pydantic-written (api.helpers.out)
        api.get("/segments/AVITO_VOICE_MESSAGES"),
        api.post("/segments", {"slug": "AVITO_NEW"}),  # 201
        api.post("/segments", {"slug": "AVITO_NEW"}),  # 409, the error envelope
        api.get("/segments/NOPE"),  # 404
        api.post("/users/1000/segments", {"add": ["NOPE"]}),  # 422
        client.post("/api/v1/segments", data="x", content_type="text/plain"),  # 415
        api.get("/users/1000/history"),
        client.post("/segment", json={"slug": "SEED_ONE"}),  # the seed's paths
        client.post("/segment", json={"slug": "SEED_ONE"}),  # 409 there
        client.get("/healthz"),  # Flask's own JSON
        client.get("/api/openapi.json"),
    ]
    for response in answers:
        ends_its_line(response)
    assert [r.status_code for r in answers[3:8]] == [201, 409, 404, 422, 415]
