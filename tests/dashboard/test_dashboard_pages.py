"""The dashboard's pages as the server paints them: sign-in required, then the fleet, a node,
the models and the events, with values in readable units, before any script runs."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from meshcore import registry
from meshcore.events import record_event
from tests.conftest import PASSWORD
from tests.dashboard.support import gpu_sample, ingest, report, runtime_sample

pytestmark = pytest.mark.django_db

PAGES = ["/dashboard/", "/dashboard/nodes/gpu-a/", "/dashboard/models/", "/dashboard/events/"]


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_it_sends_anonymous_users_to_the_login_page(path):
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/login/?next={path}"


def test_it_signs_in_a_viewer_and_returns_to_the_page_asked_for(viewer):
    client = Client()
    response = client.post("/dashboard/login/?next=/dashboard/models/", {"username": "victor", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/dashboard/models/"
    assert client.get("/dashboard/models/").status_code == 200


def test_it_tells_a_user_whose_password_is_wrong_what_to_do(viewer):
    response = Client().post("/dashboard/login/", {"username": "victor", "password": "wrong"})

    assert response.status_code == 200
    assert "do not match an active account" in response.content.decode()


def test_it_paints_every_node_and_gpu_with_readable_units(viewer, registered_node, live):
    ingest(live, report("gpu-a", gpus=[gpu_sample("GPU-a0", 0, util=37), gpu_sample("GPU-a1", 1, util=91, temp=83)]))

    html = client_of(viewer).get("/dashboard/").content.decode()

    assert 'data-node="gpu-a"' in html
    assert 'data-gpu="GPU-a0"' in html and 'data-gpu="GPU-a1"' in html
    assert "37 %" in html and "91 %" in html
    assert "20.0/80.0 GiB" in html
    assert "312/700 W" in html
    assert "41 °C" in html
    assert "1980 MHz" in html
    assert 'data-state="hot"' in html  # GPU 1 at 83 °C
    assert 'zone <b data-f="zone">eu-1</b>' in html
    assert 'data-t="gpus">2<' in html


def test_it_marks_a_gpu_with_a_recent_xid_error_and_lets_an_old_one_go(viewer, registered_node, live):
    now = time.time()
    recent = {"count": 3, "last": 79, "last_at": now - 30}
    old = {"count": 1, "last": 48, "last_at": now - 3600}
    ingest(
        live,
        report("gpu-a", gpus=[gpu_sample("GPU-a0", 0, xid_errors=recent), gpu_sample("GPU-a1", 1, xid_errors=old)]),
    )

    fleet = client_of(viewer).get("/dashboard/").content.decode()
    node = client_of(viewer).get("/dashboard/nodes/gpu-a/").content.decode()

    tiles = {tile.split('"')[0]: tile for tile in fleet.split('data-gpu="')[1:]}  # each tile's markup
    assert tiles["GPU-a0"].startswith('GPU-a0" data-state="error"') and "XID 79" in tiles["GPU-a0"]
    assert tiles["GPU-a1"].startswith('GPU-a1" data-state="ok"') and "XID" not in tiles["GPU-a1"]
    assert '<dd data-f="xid">79</dd>' in node and '<dd data-f="xid">none</dd>' in node


def test_it_marks_a_node_that_never_reported_as_stale(viewer, registered_node, live):
    html = client_of(viewer).get("/dashboard/").content.decode()

    assert 'data-node="gpu-a"' in html
    assert 'data-stale="1"' in html
    assert "never" in html


def test_it_paints_a_node_page_with_gpus_runtimes_models_and_events(viewer, registered_node, live):
    ingest(live, report("gpu-a", runtimes=[runtime_sample({"resnet": "READY"})]))
    record_event("MODEL_LOADED", node_name="gpu-a", data={"model": "resnet"})

    response = client_of(viewer).get("/dashboard/nodes/gpu-a/")
    html = response.content.decode()

    assert response.status_code == 200
    assert 'id="gpu-0"' in html
    assert "NVIDIA H100 80GB HBM3" in html
    assert 'data-instance="gpu-a/triton/resnet/1"' in html
    assert "41.5" in html and "23.0 ms" in html
    assert "MODEL_LOADED" in html
    assert 'id="snapshot"' in html  # the charts' history, embedded for the first paint


def test_it_answers_404_for_a_node_that_does_not_exist(viewer, live):
    assert client_of(viewer).get("/dashboard/nodes/nowhere/").status_code == 404


def test_it_paints_the_models_page_with_each_target(viewer, registered_node, live):
    ingest(live, report("gpu-a", runtimes=[runtime_sample({"resnet": "READY"})]))

    html = client_of(viewer).get("/dashboard/models/").content.decode()

    assert "resnet" in html
    assert 'data-target="gpu-a/triton"' in html
    assert "41.5" in html


def test_it_filters_the_events_page_by_type_and_node(viewer, operator, registered_node, live):
    registry.create_node(actor=operator, name="gpu-b", address="10.0.0.12", roles=["gpu"])
    record_event("NODE_UNHEALTHY", node_name="gpu-a")
    record_event("NODE_UNHEALTHY", node_name="gpu-b")
    client = client_of(viewer)

    everything = client.get("/dashboard/events/").content.decode()
    unhealthy_a = client.get("/dashboard/events/?types=NODE_UNHEALTHY&node=gpu-a").content.decode()

    assert everything.count('data-type="NODE_JOINED"') == 2
    assert unhealthy_a.count('class="ev"') == 1
    assert 'href="/dashboard/nodes/gpu-a/"' in unhealthy_a


def test_it_explains_a_filter_it_cannot_use(viewer, live):
    html = client_of(viewer).get("/dashboard/events/?types=NOT_A_TYPE").content.decode()

    assert "Unknown event type(s): NOT_A_TYPE" in html


def test_it_links_staff_to_the_admin_and_not_viewers(viewer, operator, registered_node, live):
    admin_link = f'href="/admin/meshcore/node/{registered_node.pk}/change/"'

    assert admin_link in client_of(operator).get("/dashboard/").content.decode()
    assert admin_link not in client_of(viewer).get("/dashboard/").content.decode()
