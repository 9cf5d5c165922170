"""The read-path baseline: a trivial Flask view returning a constant JSON body, served by
the same gunicorn config as the real app; and the same for OpenFeature's single evaluation, a
POST whose JSON body is read (the ofrep section's floor: what a POST with a body costs by
itself)."""

from flask import Flask, request

app = Flask(__name__)
BODY = {
    "user_id": 1,
    "segments": [{"slug": "AVITO_VOICE_MESSAGES", "source": "explicit", "expires_at": None}],
}


@app.get("/api/v1/users/<user_id>/segments")
def constant(user_id):
    return BODY


EVALUATION = {"key": "P0003", "value": True, "reason": "TARGETING_MATCH", "variant": "on", "metadata": {}}


@app.post("/ofrep/v1/evaluate/flags/<key>")
def constant_evaluation(key):
    request.get_data()
    return EVALUATION
