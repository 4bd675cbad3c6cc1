"""Every response carries a request id; a sane client id is kept, anything else replaced."""

import logging

from meshcore.logging import JsonFormatter
from meshcore.request_id import RequestIdLogFilter, current_request_id, request_id_from


def test_it_keeps_a_sane_client_request_id(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"


def test_it_replaces_an_unsafe_request_id(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline"
    assert len(response["X-Request-ID"]) == 32
    assert request_id_from("x" * 200) != "x" * 200


def test_it_puts_the_request_id_in_json_log_lines():
    record = logging.makeLogRecord(
        {
            "name": "meshcore.test",
            "msg": "hello %s",
            "args": ("world",),
            "levelno": 20,
            "levelname": "INFO",
            "node": "gpu-a",
        }
    )
    token = current_request_id.set("req-7")
    try:
        RequestIdLogFilter().filter(record)
    finally:
        current_request_id.reset(token)
    import json

    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello world"
    assert entry["request_id"] == "req-7"
    assert entry["node"] == "gpu-a"
    assert entry["level"] == "info"
