"""Property-based tests of the whole API, generated from its own OpenAPI schema (schemathesis).

Every operation the schema describes gets valid and invalid requests (bodies, paths, query
strings, headers), as a staff user with an API token and as nobody at all, sent in-process to
the Django WSGI application. Whatever the input, the answer is never a 5xx: the in-process log
(LocalLog) always has a quorum, so a 503 is as much a bug as a 500. Half the staff requests name
an object that exists (a node, a model, a policy...) in their path, so updates and actions get
past the 404 to the validation and the registry behind them.

The event stream (`GET /api/v1/events/stream/`) is fuzzed anonymously only: a staff request opens
a stream that never ends over WSGI (tests/meshcore/test_event_stream_sse.py covers it).
About two and a half minutes on the 2-core machine; the examples per operation below bound it.
"""

from __future__ import annotations

import json
import os
import traceback
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from meshcore import registry
from meshcore.models import ApiToken, Event
from meshcore.replication.log import local_log
from meshcore.tokens import token_digest
from tests.meshcore.api_support import make_gpu, make_instance, make_model, make_policy, make_runtime

# MESH_FUZZ_SCALE=N multiplies the examples for a deeper run (N=1 takes about 2.5 minutes on 2 cores).
SCALE = int(os.environ.get("MESH_FUZZ_SCALE", "1"))
STAFF_EXAMPLES = 15 * SCALE  # per operation (44), on top of schemathesis's examples and coverage phases
ANONYMOUS_EXAMPLES = 5 * SCALE  # per operation (45), random generation only: every answer is a 401 anyway
SEQUENCES = 40 * SCALE  # random sequences of staff calls, up to MAX_CALLS each
MAX_CALLS = 12
STREAM = "v1_events_stream"
JSON = "application/json"


def api_schema(config: dict[str, Any] | None = None) -> Any:
    """The schema `/api/schema/` serves, generated once at collection (one pytest test per operation)."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = json.loads(OpenApiJsonRenderer().render(document))
    return schemathesis.openapi.from_dict(loaded, config=SchemathesisConfig.from_dict(config or {}))


schema = api_schema()
anonymous_schema = api_schema({"phases": {"coverage": {"enabled": False}, "examples": {"enabled": False}}})
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)


class Staff:
    """A staff user's API token; issued again when a fuzzed `DELETE /tokens/{id}/` revoked it."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self.value = ""

    def headers(self) -> dict[str, str]:
        if not ApiToken.objects.filter(digest=token_digest(self.value), revoked_at__isnull=True).exists():
            _, self.value = registry.issue_api_token(actor=self.user, user=self.user, name=f"fuzz-{uuid.uuid4().hex}")
        return {"Authorization": f"Bearer {self.value}"}


@pytest.fixture
def wsgi_app(db) -> Iterator[WSGIHandler]:
    """The WSGI application inside the test's transaction, as Django's test client runs it.

    Django closes the database connection around each request when it is not in autocommit mode;
    inside the test's transaction that would end the transaction (the test client does the same).
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def staff(operator) -> Staff:
    return Staff(operator)


@pytest.fixture
def existing(registered_node, operator) -> dict[str, list[Any]]:
    """One object of each kind, by the first segment of the paths that name it."""
    model = make_model("resnet50")
    runtime = make_runtime(registered_node)
    policy = make_policy("quota-a", "quota")
    gpu = make_gpu(registered_node)
    instance = make_instance(runtime, "resnet50", model=model)
    token, _ = registry.issue_api_token(actor=operator, user=operator, name="existing")
    return {
        "nodes": [registered_node.name],
        "models": [model.id],
        "runtimes": [runtime.id],
        "policies": [policy.name],
        "gpus": [gpu.id],
        "instances": [instance.id],
        "tokens": [token.id],
        "events": list(Event.objects.values_list("id", flat=True)[:3]),
        "cluster": ["127.0.0.1:4321"],
    }


@pytest.fixture
def server_errors() -> Iterator[list[str]]:
    """The traceback of every exception a request raised (Django answers it with a 500)."""
    seen: list[str] = []

    def record(sender: Any, request: Any = None, **kwargs: Any) -> None:
        seen.append(traceback.format_exc())

    got_request_exception.connect(record)
    try:
        yield seen
    finally:
        got_request_exception.disconnect(record)


def log_mark() -> tuple[int, int]:
    state = local_log().state
    return state.seq, len(state.results)


@contextmanager
def rolled_back() -> Iterator[None]:
    """One example's requests in a savepoint, undone afterwards: every example starts from the same objects."""
    before = log_mark()
    try:
        with transaction.atomic():
            yield
            transaction.set_rollback(True)
    finally:
        if log_mark() != before:
            local_log().reset()  # something was written: the in-memory state follows the database back


def name_existing(case: Any, existing: dict[str, list[Any]], pick: int) -> None:
    """Put an existing object's identifier into the case's path parameter (if it has one)."""
    if not case.path_parameters:
        return
    kind = case.operation.path.removeprefix("/api/v1/").split("/")[0]
    choices = existing.get(kind)
    if choices:
        name = next(iter(case.path_parameters))
        case.path_parameters = {**case.path_parameters, name: choices[pick % len(choices)]}


def assert_no_server_error(case: Any, response: Any, errors: list[str]) -> None:
    assert response.status_code < 500, (
        f"{case.operation.label} answered {response.status_code} to:\n{case.as_curl_command()}\n"
        f"{response.text[:2000]}\n{''.join(errors[-1:])}"
    )


@schema.exclude(operation_id=STREAM).parametrize()
@settings(FUZZ, max_examples=STAFF_EXAMPLES)
def test_it_never_answers_a_staff_request_with_a_server_error(case, wsgi_app, staff, existing, server_errors):
    # Derived from the generated case (schemathesis allows no extra strategies next to its examples).
    pick = zlib.crc32(repr(case.path_parameters).encode()) % 6
    if pick < 3:
        name_existing(case, existing, pick)

    headers = staff.headers()  # issued outside the savepoint: it outlives the example
    with rolled_back():
        response = case.call(app=wsgi_app, headers=headers)

    assert_no_server_error(case, response, server_errors)


@anonymous_schema.parametrize()
@settings(FUZZ, max_examples=ANONYMOUS_EXAMPLES)
def test_it_never_answers_an_anonymous_request_with_a_server_error(case, wsgi_app, server_errors):
    case.headers = {name: value for name, value in (case.headers or {}).items() if name.lower() != "authorization"}

    response = case.call(app=wsgi_app)

    assert response.status_code in (400, 401, 403, 404, 405, 406, 415), response.text[:500]
    assert_no_server_error(case, response, server_errors)


def staff_operations() -> list[Any]:
    return [result.ok() for result in schema.exclude(operation_id=STREAM).get_all_operations()]


@settings(FUZZ, max_examples=SEQUENCES)
@given(
    calls=st.lists(
        st.tuples(st.one_of(*(operation.as_strategy() for operation in staff_operations())), st.integers(0, 3)),
        min_size=1,
        max_size=MAX_CALLS,
    )
)
def test_a_write_succeeds_after_any_sequence_of_staff_calls(calls, wsgi_app, staff, existing, server_errors):
    staff.headers()  # issued outside the savepoint: it outlives the example (a call may still revoke it)
    with rolled_back():
        for case, pick in calls:
            if pick < 3:
                name_existing(case, existing, pick)
            response = case.call(app=wsgi_app, headers=staff.headers())
            assert_no_server_error(case, response, server_errors)

        name = f"after-{uuid.uuid4().hex[:12]}"
        create = schema["/api/v1/nodes/"]["POST"].Case(body={"name": name, "address": "10.0.0.9"}, media_type=JSON)
        created = create.call(app=wsgi_app, headers=staff.headers())
        read = schema["/api/v1/nodes/{name}/"]["GET"].Case(path_parameters={"name": name})

        assert created.status_code == 201, created.text
        assert read.call(app=wsgi_app, headers=staff.headers()).json()["name"] == name
