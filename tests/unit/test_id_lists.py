"""The bulk-add id parser: pasted text has no header, a file's first line is a header only when
it holds no number, several columns use user_id, every bad token is named with its line."""

import io

import pytest

from webapp.errors import ValidationFailed
from webapp.rules import MAX_USER_ID
from webapp.web.id_lists import MAX_REPORTED, parse_file, parse_pasted


def problems(call, *args):
    with pytest.raises(ValidationFailed) as caught:
        call(*args)
    return caught.value.message, [(d["field"], d["message"]) for d in caught.value.details]


def upload(text: str | bytes, name="ids.csv"):
    return io.BytesIO(text.encode() if isinstance(text, str) else text), name


def test_pasted_ids_with_every_separator_and_no_header():
    parsed = parse_pasted("302, 303\n304;305 306\t307\r\n\n 308 ", 100)
    assert parsed.ids == [302, 303, 304, 305, 306, 307, 308] and parsed.header is None


def test_pasted_bad_tokens_are_all_named_with_their_line():
    message, details = problems(parse_pasted, "-301, 302, 303\n304\n305 abc 1.5\n0 99999999999999999999", 100)
    assert message == "5 entries are not user ids"
    assert details == [
        ("user_ids", "line 1: “-301” is negative: user ids start at 1"),
        ("user_ids", "line 3: “abc” is not a number"),
        ("user_ids", "line 3: “1.5” is not a whole number"),
        ("user_ids", "line 4: “0”: user ids start at 1"),
        ("user_ids", "line 4: “99999999999999999999” is too large to be a user id"),
    ]


@pytest.mark.parametrize("text", ["-5, 7", "abc 8"])
def test_the_issue_examples_name_the_bad_token_not_no_ids(text):
    message, details = problems(parse_pasted, text, 100)
    assert message == "1 entry is not a user id" and len(details) == 1 and "line 1" in details[0][1]
    assert "header" not in details[0][1]


def test_pasted_column_name_is_a_bad_token_with_a_hint():
    _, details = problems(parse_pasted, "user_id\n1\n2", 100)
    assert details == [
        (
            "user_ids",
            "line 1: “user_id” is not a number (pasted text has no header line: leave the column name out)",
        )
    ]


def test_largest_id_and_leading_zeros():
    assert parse_pasted(f"{MAX_USER_ID} 007", 10).ids == [MAX_USER_ID, 7]
    assert "too large" in problems(parse_pasted, str(MAX_USER_ID + 1), 10)[1][0][1]


def test_file_first_line_is_data_when_it_holds_a_number():
    _, details = problems(parse_file, *upload("-301, 302, 303\n304\n305"), 100)
    assert details == [("file", "line 1: “-301” is negative: user ids start at 1")]
    parsed = parse_file(*upload("301, 302, 303\n304\n305\n"), 100)
    assert parsed.ids == [301, 302, 303, 304, 305] and parsed.header is None and parsed.source == "ids.csv"


def test_file_header_line_is_skipped_and_reported():
    parsed = parse_file(*upload("\ufeffuser_id\r\n1\r\n2\r\n"), 100)
    assert parsed.ids == [1, 2] and parsed.header == "user_id" and parsed.column is None
    parsed = parse_file(*upload("\n\nIDs of the test group\n5 6\n"), 100)
    assert parsed.ids == [5, 6] and parsed.header == "IDs of the test group"


def test_multi_column_csv_uses_its_user_id_column():
    text = 'user_id,email,country\n1001,a@x.ru,RU\n"1002","b, c@x.ru",KZ\n\n1003,,\n'
    parsed = parse_file(*upload(text), 100)
    assert parsed.ids == [1001, 1002, 1003] and parsed.column == "user_id"
    assert parsed.header == "user_id,email,country"
    parsed = parse_file(*upload("email;User_ID\nx@y;7\nz@y;8\n"), 100)
    assert parsed.ids == [7, 8] and parsed.column == "User_ID"
    assert parse_file(*upload("id\tname\n9\tNine\n"), 100).ids == [9]


def test_multi_column_csv_problems():
    _, details = problems(parse_file, *upload("user_id,email\n1,a\n,b\nx,c\n"), 100)
    assert details == [
        ("file", "line 3: no value in the user_id column"),
        ("file", "line 4: “x” is not a number"),
    ]
    _, details = problems(parse_file, *upload("email,country\na,RU\n"), 100)
    assert details[0][1].startswith(
        "ids.csv has several columns (“email”, “country”) and none is called user_id"
    )


def test_file_edge_cases():
    assert problems(parse_file, *upload(""), 100)[1] == [("file", "ids.csv is empty")]
    assert "no user ids below it" in problems(parse_file, *upload("user_id\n"), 100)[1][0][1]
    assert "could not be read as text" in problems(parse_file, *upload(b"\xff\xfe\x00\x01"), 100)[1][0][1]


def test_limit():
    assert "more than 3 ids" in problems(parse_pasted, "1 2 3 4", 3)[1][0][1]
    assert "more than 3 ids" in problems(parse_file, *upload("1\n2\n3\n4\n"), 3)[1][0][1]


def test_many_problems_are_counted_and_the_first_ones_listed():
    message, details = problems(parse_pasted, "\n".join(["x"] * (MAX_REPORTED + 5)), 10)
    assert message == f"{MAX_REPORTED + 5:,} entries are not user ids (the first {MAX_REPORTED:,} are listed)"
    assert len(details) == MAX_REPORTED and details[-1][1].startswith(f"line {MAX_REPORTED}:")


def test_a_million_ids_parse():
    """All of them, in order (how fast is `make bench`'s figure: bulk, parse 1,000,000 ids)."""
    text = "user_id\n" + "\n".join(str(10_000_000 + i) for i in range(1_000_000))
    parsed = parse_file(*upload(text), 1_000_000)
    assert len(parsed.ids) == 1_000_000 and parsed.ids[0] == 10_000_000 and parsed.ids[-1] == 10_999_999
