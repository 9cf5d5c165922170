"""The README's OpenFeature examples, taken from README.md itself: the Python one and the
JavaScript one run against a live server as a reader pastes them (the URL changed to the
server's) and print what their comments say; and docs/api.md's curl examples of OFREP."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ofrep_clients import run_node

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8000"


def snippet(language: str) -> tuple[str, str]:
    """The README's ``language`` block in its OpenFeature section, and the output its last
    comment states."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## OpenFeature (OFREP)") :]
    code = re.search(rf"```{language}\n(.*?)```", section, re.S)[1]
    said = re.search(r"(?:#|//) (\w+ TARGETING_MATCH on)$", code, re.M)[1]
    return code, said


@pytest.fixture
def readme_scene(redis_app):
    """What the README's curl examples leave behind: user 1000 in AVITO_VOICE_MESSAGES for a day."""
    client = redis_app.test_client()
    client.post("/api/v1/segments", json={"slug": "AVITO_VOICE_MESSAGES"})
    client.post(
        "/api/v1/users/1000/segments", json={"add": [{"slug": "AVITO_VOICE_MESSAGES", "ttl_seconds": 86400}]}
    )


def test_the_python_example(ofrep_server, readme_scene):
    code, said = snippet("python")
    done = subprocess.run(
        [sys.executable, "-c", code.replace(README_URL, ofrep_server)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == said == "True TARGETING_MATCH on"


def test_the_javascript_example(node_clients, ofrep_server, readme_scene):
    code, said = snippet("js")
    script = node_clients / "dist" / "readme_example.mjs"  # (beside node_modules: its imports resolve)
    script.parent.mkdir(exist_ok=True)
    script.write_text(code.replace(README_URL, ofrep_server))
    assert run_node(str(script)).strip() == said == "true TARGETING_MATCH on"


def test_the_api_reference_curl_examples(curl_server, readme_scene, tmp_path):
    address, recorded = curl_server
    text = (ROOT / "docs" / "api.md").read_text()
    section = text[text.index("## OpenFeature (OFREP)") :]
    script = re.search(r"```sh\n(.*?)```", section, re.S)[1].replace(README_URL, f"http://{address}")
    done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert recorded.statuses[-3:] == [200, 200, 304]  # (after the scene's two)
    single, status = done.stdout.splitlines()
    assert '"reason":"TARGETING_MATCH"' in single and status == "304"
