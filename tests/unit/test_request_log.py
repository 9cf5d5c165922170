"""The request log's line (webapp.telemetry.observability.RequestLog): JSON of its own, never longer than
PIPE_BUF, and a descriptor that refuses it costs the line, never the request."""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import UTC, datetime

import pytest

from webapp.telemetry.metrics import REGISTRY
from webapp.telemetry.observability import RequestLog


@pytest.fixture
def pipe():
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):
            os.close(fd)


def lines_from(fd: int) -> list[dict]:
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 1 << 20)
    except BlockingIOError:
        data = b""
    return [json.loads(line) for line in data.decode().splitlines()]


def test_a_line_is_a_json_object_with_the_time_in_utc(pipe):
    read, write = pipe
    log = RequestLog(write)
    before = datetime.now(UTC)
    started = time.perf_counter() - 0.0123
    log.write("rid-1", "GET", '/weird "path"\n\\é', 200, started, None)
    measured_ms = (time.perf_counter() - started) * 1000
    log.write("rid-2", "POST", "/api/v1/segments", 201, time.perf_counter(), 'svc "quoted"')
    first, second = lines_from(read)
    assert (
        first["request_id"] == "rid-1" and first["path"] == '/weird "path"\n\\é' and first["client"] is None
    )
    assert first["status"] == 200 and 12.3 <= first["duration_ms"] <= measured_ms + 0.01
    assert list(first) == ["time", "request_id", "method", "path", "status", "duration_ms", "client"]
    stamp = datetime.strptime(first["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= datetime.now(UTC)
    assert second["client"] == 'svc "quoted"' and second["method"] == "POST"


def test_the_time_follows_the_clock_across_seconds():
    log = RequestLog(None)
    assert (
        json.loads(log.line(1_700_000_000.5, "r", "GET", "/", 200, 1.0, None))["time"]
        == "2023-11-14T22:13:20.500Z"
    )
    assert (
        json.loads(log.line(1_700_000_001.042, "r", "GET", "/", 200, 1.0, None))["time"]
        == "2023-11-14T22:13:21.042Z"
    )
    assert (
        json.loads(log.line(1_700_000_000.999, "r", "GET", "/", 200, 1.0, None))["time"]
        == "2023-11-14T22:13:20.999Z"
    )


@pytest.mark.parametrize("path", ["/x" * 5000, "/\u00e9\x01" * 1500])  # long; escapes that grow it six-fold
def test_a_long_path_is_cut_below_pipe_buf(pipe, path):
    read, write = pipe
    RequestLog(write).write("rid", "GET", path, 404, time.perf_counter(), "c")
    data = os.read(read, 1 << 16)
    assert len(data) <= RequestLog.MAX_LINE < 4096 and data.endswith(b"\n")
    line = json.loads(data)
    assert line["path"] == path[:200] + "..." and line["status"] == 404


def test_every_field_is_capped_so_the_worst_line_stays_below_pipe_buf(pipe):
    """The widest escapes in every field at once (a client from X-Forwarded-For can carry any
    latin-1 byte; a path, any character): still one line, within MAX_LINE."""
    read, write = pipe
    rid, method, client, path = "\x01" * 500, "\x7f" * 500, "\xff" * 6000, "\U0001f600" * 3000
    RequestLog(write).write(rid, method, path, 200, time.perf_counter(), client)
    data = os.read(read, 1 << 16)
    assert len(data) <= RequestLog.MAX_LINE and data.count(b"\n") == 1
    line = json.loads(data)
    assert (line["request_id"], line["method"]) == ("\x01" * 64 + "...", "\x7f" * 32 + "...")
    assert (line["client"], line["path"]) == ("\xff" * 100 + "...", "\U0001f600" * 200 + "...")


def test_only_a_field_that_was_cut_says_so(pipe):
    read, write = pipe
    RequestLog(write).write("rid", "GET", "/short", 200, time.perf_counter(), "c" * 3000)
    line = json.loads(os.read(read, 1 << 16))
    assert line["path"] == "/short" and line["client"] == "c" * 100 + "..." and line["request_id"] == "rid"


def test_a_refused_line_is_dropped_and_counted_never_raised(pipe):
    read, write = pipe
    os.close(read)  # writing to a pipe with no reader: EPIPE (Python ignores SIGPIPE)

    def dropped() -> float:
        return REGISTRY.get_sample_value("segments_request_log_dropped_total", {"stream": "test-pipe"}) or 0.0

    before = dropped()
    RequestLog(write, "test-pipe").write("rid", "GET", "/", 200, time.perf_counter(), None)
    assert dropped() == before + 1


def test_off_writes_nothing_and_an_unknown_destination_is_refused(capfd):
    capfd.readouterr()
    RequestLog.to("off").write("rid", "GET", "/", 200, time.perf_counter(), None)
    assert capfd.readouterr() == ("", "")
    RequestLog.to("stderr").write("rid", "GET", "/", 200, time.perf_counter(), None)
    assert json.loads(capfd.readouterr().err)["request_id"] == "rid"
    assert (RequestLog.to("stderr").fd, RequestLog.to("stdout").fd) == (2, 1)
    with pytest.raises(RuntimeError, match="REQUEST_LOG must be one of stderr, stdout, off"):
        RequestLog.to("syslog")
