from django.urls import path
from rest_framework.routers import DefaultRouter

from meshcore.api import views
from meshcore.api.cluster import ClusterMembersView, ClusterMemberView, ClusterView
from meshcore.api.event_stream import event_stream
from meshcore.api.routing import RoutingExplainView
from meshcore.api.telemetry import TelemetryView

router = DefaultRouter(trailing_slash=True)
router.register("nodes", views.NodeViewSet, basename="node")
router.register("models", views.ModelViewSet, basename="model")
router.register("runtimes", views.RuntimeViewSet, basename="runtime")
router.register("policies", views.PolicyViewSet, basename="policy")
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("gpus", views.GpuViewSet, basename="gpu")
router.register("instances", views.ModelInstanceViewSet, basename="instance")
router.register("events", views.EventViewSet, basename="event")

urlpatterns = [
    path("telemetry/", TelemetryView.as_view(), name="telemetry"),
    path("routing/explain/", RoutingExplainView.as_view(), name="routing-explain"),
    path("cluster/", ClusterView.as_view(), name="cluster"),
    path("cluster/members/", ClusterMembersView.as_view(), name="cluster-members"),
    path("cluster/members/<str:address>/", ClusterMemberView.as_view(), name="cluster-member"),
    # Before the router, whose events/<id>/ would otherwise take "stream" for an id.
    path("events/stream/", event_stream, name="event-stream"),
    *router.urls,
]
