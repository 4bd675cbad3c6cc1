"""The dashboard's pages. Each renders its current state on the server (the first paint), then
its script connects to `/ws/dashboard/` and keeps it moving. Signed-in users only."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy

from dashboard import formats, markup, snapshots
from dashboard.checks import missing_vendored_files
from meshcore import events
from meshcore.models import EventType, Node

LOGIN_URL = reverse_lazy("dashboard:login")
SOCKET_PATH = "/ws/dashboard/"


def _page(request: HttpRequest, template: str, page: str, socket_query: dict[str, str], **context: object):
    context.update(
        page=page,
        socket_path=SOCKET_PATH,
        socket_query=urlencode({"page": page, **socket_query}),
        charts=not missing_vendored_files(),
    )
    return render(request, template, context)


@login_required(login_url=LOGIN_URL)
def fleet(request: HttpRequest) -> HttpResponse:
    snapshot = snapshots.fleet_snapshot()
    nodes = formats.decorate_nodes(snapshot["nodes"], snapshot["time"])
    totals = snapshots.fleet_totals(snapshot["nodes"])
    labels = sorted({f"{key}={value}" for node in nodes for key, value in node["labels"].items()})
    return _page(
        request,
        "dashboard/fleet.html",
        "fleet",
        {},
        nodes=nodes,
        totals=totals,
        totals_text={
            "util": formats.pct(totals["util"]),
            "mem": formats.memory_total(totals["mem"], totals["mem_total"]),
            "power": formats.power_total(totals["power"], totals["power_limit"]),
        },
        zones=sorted({node["zone"] for node in nodes if node["zone"]}),
        labels=labels,
        cards=markup.fleet_cards(nodes, request.user.is_staff),
        blank_card=markup.blank_card(request.user.is_staff),
        blank_tile=markup.blank_tile(),
    )


@login_required(login_url=LOGIN_URL)
def node(request: HttpRequest, name: str) -> HttpResponse:
    snapshot = snapshots.node_snapshot(name)
    if snapshot is None:
        raise Http404(f"There is no node {name!r}.")
    card = formats.decorate_nodes([snapshot["node"]], snapshot["time"])[0]
    return _page(
        request,
        "dashboard/node.html",
        "node",
        {"node": name},
        node=card,
        snapshot=snapshot,
        runtimes=snapshot["runtimes"],
        events=snapshot["events"],
    )


@login_required(login_url=LOGIN_URL)
def models(request: HttpRequest) -> HttpResponse:
    snapshot = snapshots.models_snapshot()
    return _page(request, "dashboard/models.html", "models", {}, snapshot=snapshot, models=snapshot["models"])


@login_required(login_url=LOGIN_URL)
def event_feed(request: HttpRequest) -> HttpResponse:
    chosen_type = request.GET.get("types", "")
    chosen_node = request.GET.get("node", "")
    params = {key: [value] for key, value in (("types", chosen_type), ("node", chosen_node)) if value}
    try:
        subscription = events.parse_subscription(params)
    except events.InvalidSubscription as error:
        subscription, problems = events.Subscription(), error.errors
    else:
        problems = {}
    rows = snapshots.recent_events(subscription=subscription)
    query = {key: values[0] for key, values in params.items()} if not problems else {}
    query["after"] = str(rows[0]["id"]) if rows else "0"
    return _page(
        request,
        "dashboard/events.html",
        "events",
        query,
        events=rows,
        types=EventType.values,
        chosen_type=chosen_type,
        chosen_node=chosen_node,
        node_names=list(Node.objects.values_list("name", flat=True)),
        problems=problems,
        now=time.time(),
    )


class LoginView(auth_views.LoginView):
    """Any account may sign in here (the admin's own login takes staff only)."""

    template_name = "dashboard/login.html"
    redirect_authenticated_user = True
