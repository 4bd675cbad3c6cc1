"""The model catalog through /api/v1/models/."""

from __future__ import annotations

import pytest

from meshcore.models import Event, EventType, Model
from tests.meshcore.api_support import API, data_of, events_since, last_event_id, make_model

RESNET = {"name": "resnet50", "platform": "onnxruntime", "config": {"max_batch_size": 8}, "description": "Vision"}


def test_it_adds_a_model(operator_client):
    before = last_event_id()

    response = operator_client.post(f"{API}/models/", RESNET, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["revision"] == "1"
    assert body["version"] == 1
    model = Model.objects.get(pk=body["id"])
    assert (model.name, model.platform, model.config) == ("resnet50", "onnxruntime", {"max_batch_size": 8})
    assert events_since(before) == [(EventType.MODEL_CREATED, "olivia")]


def test_it_keeps_several_revisions_of_a_name(operator_client):
    first = operator_client.post(f"{API}/models/", RESNET, format="json")
    second = operator_client.post(f"{API}/models/", {**RESNET, "revision": "2"}, format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    assert list(Model.objects.values_list("revision", flat=True)) == ["1", "2"]


def test_it_refuses_a_duplicate_name_and_revision_with_409(operator_client):
    make_model("resnet50")
    before = last_event_id()

    response = operator_client.post(f"{API}/models/", RESNET, format="json")

    assert response.status_code == 409
    assert "resnet50" in response.json()["detail"]
    assert Model.objects.count() == 1
    assert events_since(before) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"platform": "Not A Platform!"}, "platform"),
        ({"platform": ""}, "platform"),
        ({"name": ""}, "name"),
        ({"name": "n" * 129}, "name"),
        ({"config": ["max_batch_size"]}, "config"),
        ({"config": "{}"}, "config"),
        ({"revision": "r" * 65}, "revision"),
    ],
)
def test_it_rejects_bad_fields_with_400_naming_the_field(operator_client, change, field):
    response = operator_client.post(f"{API}/models/", {**RESNET, **change}, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Model.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "m", "platform": "python", "config": {"limit": 1e999}}',
        '{"name": "m", "platform": "python", "config": {"label": "a\\u0000b"}}',
        '{"name": "m", "platform": "python", "config": {"a\\u0000": 1}}',
        '{"name": "m", "platform": "python", "config": {"deep": ' + "[" * 40 + "]" * 40 + "}}",
    ],
    ids=["infinity", "nul-in-value", "nul-in-key", "too-deep"],
)
def test_it_rejects_config_no_database_can_store(operator_client, body):
    response = operator_client.post(f"{API}/models/", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert "config" in response.json()
    assert not Model.objects.exists()


def test_it_reads_a_model(operator_client):
    model = make_model("bert", platform="python", revision="3")

    response = operator_client.get(f"{API}/models/{model.pk}/")

    assert response.status_code == 200
    assert response.json()["name"] == "bert"
    assert response.json()["revision"] == "3"
    assert response["ETag"] == '"1"'


def test_it_answers_404_for_an_unknown_model(operator_client):
    assert operator_client.get(f"{API}/models/999999/").status_code == 404
    assert operator_client.get(f"{API}/models/not-a-number/").status_code == 404


def test_it_updates_a_model_and_bumps_its_version(operator_client):
    model = make_model("resnet50")
    before = last_event_id()

    response = operator_client.patch(
        f"{API}/models/{model.pk}/", {"description": "Image classifier", "config": {"a": 1}}, format="json"
    )

    assert response.status_code == 200, response.content
    model.refresh_from_db()
    assert (model.description, model.config, model.version) == ("Image classifier", {"a": 1}, 2)
    assert events_since(before) == [(EventType.MODEL_UPDATED, "olivia")]


def test_it_refuses_renaming_onto_an_existing_revision(operator_client):
    make_model("resnet50")
    other = make_model("bert")

    response = operator_client.patch(f"{API}/models/{other.pk}/", {"name": "resnet50"}, format="json")

    assert response.status_code == 409
    other.refresh_from_db()
    assert (other.name, other.version) == ("bert", 1)


def test_it_deletes_a_model(operator_client):
    model = make_model("resnet50")
    before = last_event_id()

    response = operator_client.delete(f"{API}/models/{model.pk}/")

    assert response.status_code == 204
    assert not Model.objects.exists()
    assert events_since(before) == [(EventType.MODEL_DELETED, "olivia")]
    assert data_of(Event.objects.get(type=EventType.MODEL_DELETED)) == {"model": "resnet50", "revision": "1"}
