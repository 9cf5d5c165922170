"""The read-path baseline: a trivial Flask view returning a constant JSON body, served by
the same gunicorn config as the real app."""

from flask import Flask

app = Flask(__name__)
BODY = {
    "user_id": 1,
    "segments": [{"slug": "AVITO_VOICE_MESSAGES", "source": "explicit", "expires_at": None}],
}


@app.get("/api/v1/users/<user_id>/segments")
def constant(user_id):
    return BODY
