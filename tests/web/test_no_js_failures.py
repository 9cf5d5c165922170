"""Every dashboard form's no-JS failure path: the error is shown (flash + redirect) and nothing
of the failed attempt commits, whatever the status code of the answer."""

import pytest


@pytest.fixture
def segment(api):
    api.segment("NOJS", description="ORIGINAL", rollout_percent=5)
    api.change(7, ["NOJS"])
    return "NOJS"


def test_settings_with_a_bad_percent_keep_the_old_description(client, csrf, api, segment):
    response = client.post(
        "/segments/NOJS/settings",
        follow_redirects=True,
        data={"description": "NEW", "rollout_percent": "150", "csrf_token": csrf},
    )
    assert response.status_code == 200 and "Enter a percentage from 0 to 100." in response.get_data(
        as_text=True
    )
    saved = api.get("/segments/NOJS").json
    assert saved["description"] == "ORIGINAL" and saved["rollout_percent"] == 5


@pytest.mark.parametrize(
    "path, data, message",
    [
        ("/segments", {"slug": "lower case"}, "Use upper-case letters, digits and underscores"),
        ("/segments", {"slug": "nojs_new"}, "Slugs are written in upper case."),
        (
            "/segments/NOJS/members",
            {"user_ids": "8 9 abc", "ttl_seconds": ""},
            "Line 1: “abc” is not a number.",
        ),
        ("/segments/NOJS/members", {"user_ids": "8 9", "expires_at": "2000-01-01T00:00"}, "already passed"),
        ("/users/7/segments", {"slug": "NO_SUCH"}, "There is no segment called NO_SUCH."),
        (
            "/users/7/segments",
            {"slug": "NOJS", "expires_at": "yesterday"},
            "Enter the expiry as a date and time.",
        ),
        ("/reports", {"kind": "user_history", "user_id": "7", "period": "2026-13"}, "Choose a month."),
        ("/reports", {"kind": "all_history", "period": "2999-01"}, "January 2999 has not started yet"),
    ],
)
def test_failed_forms_show_the_error_and_write_nothing(client, csrf, api, segment, path, data, message):
    before = (
        api.get("/segments/NOJS/members").json["items"],
        api.get("/users/7/history").json["items"],
        api.get("/segments").json["total"],
    )
    response = client.post(path, data={**data, "csrf_token": csrf}, follow_redirects=True)
    assert response.status_code == 200 and message in response.get_data(as_text=True)
    after = (
        api.get("/segments/NOJS/members").json["items"],
        api.get("/users/7/history").json["items"],
        api.get("/segments").json["total"],
    )
    assert after == before


def test_delete_with_a_wrong_confirmation_deletes_nothing(client, csrf, api, segment):
    response = client.post("/segments/NOJS/delete", data={"confirm": "NOPE", "csrf_token": csrf})
    assert response.status_code == 422 and "That is not NOJS: type the slug exactly" in response.get_data(
        as_text=True
    )
    assert api.get("/segments/NOJS").status_code == 200 and api.active(7)[0]["slug"] == "NOJS"


def test_query_parameters_that_collide_with_view_arguments_are_not_500(client, segment):
    for path in (
        "/segments/NOJS/members?slug=OTHER&_method=DELETE",
        "/?page=%C2%B2",
        "/?q=a%00b",
        "/segments/NOJS?after=%D9%A3",
    ):
        assert client.get(path).status_code < 500, path
