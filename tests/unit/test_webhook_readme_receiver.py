"""The README's webhook receiver, taken from README.md itself, verifies what Segments signs:
a signed delivery is taken (204, once per webhook-id), a forged one refused (400)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from webapp.services.webhooks import signing

ROOT = Path(__file__).resolve().parents[2]


def readme_receiver() -> str:
    text = (ROOT / "README.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "standardwebhooks" in b)


def test_the_readme_receiver_verifies_our_signatures(monkeypatch, capsys):
    secret = signing.new_secret()
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    scope: dict = {"__name__": "readme_receiver"}
    exec(compile(readme_receiver(), "README.md", "exec"), scope)  # noqa: S102 (our own README)
    client = scope["app"].test_client()
    body = json.dumps({"type": "segment.created", "timestamp": "t", "data": {"segment": "A"}}).encode()
    headers = signing.headers([secret], "msg_readme", int(time.time()), body)
    for _ in range(2):  # the second time is deduped
        assert client.post("/segments", data=body, headers=headers).status_code == 204
    assert capsys.readouterr().out.count("segment.created") == 1
    forged = signing.headers([signing.new_secret()], "msg_forged", int(time.time()), body)
    assert client.post("/segments", data=body, headers=forged).status_code == 400
