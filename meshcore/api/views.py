"""Thin API views: a queryset, a serializer, a filterset; changes go to `meshcore.registry`."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from meshcore import registry
from meshcore.api import filters, serializers
from meshcore.live.readers import read_live, router_stats_by_target
from meshcore.live.store import live_store
from meshcore.models import ApiToken, Event, Gpu, Model, ModelInstance, Node, Policy, Runtime

logger = logging.getLogger(__name__)

IF_MATCH = OpenApiParameter(
    "If-Match", str, OpenApiParameter.HEADER, required=False, description="Version you read; 409 when stale."
)


# Node and policy names are slugs; anything else (a NUL byte included, which PostgreSQL
# refuses outright) names nothing, so the URL resolver answers 404 before any query.
NAME_IN_PATH = "[-a-zA-Z0-9_]+"


def if_match_version(request: Request) -> int | None:
    value = request.headers.get("If-Match", "").strip().strip('"')
    if not value or value == "*":
        return None
    if not value.isdigit():
        raise ValidationError({"If-Match": ['Send the resource\'s version, for example If-Match: "3".']})
    return int(value)


class LiveStateMixin:
    """Serializers get the live state of the nodes in the response, read in one round trip."""

    def live_node_names(self, objects: list[Any]) -> list[str]:
        raise NotImplementedError

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if args and not isinstance(args[0], Request) and "data" not in kwargs:
            objects = list(args[0]) if kwargs.get("many") else [args[0]]
            kwargs.setdefault("context", self.get_serializer_context())
            kwargs["context"]["live"] = live_state_for(self.live_node_names(objects))
        return super().get_serializer(*args, **kwargs)


def live_state_for(names: list[str]) -> tuple[dict, float]:
    if not names:
        return {}, 0.0
    try:
        return read_live(names)
    except Exception:
        # The API answers without live values rather than failing while the store is away.
        logger.warning("live state store unavailable; answering without live values", exc_info=True)
        return {}, 0.0


def router_stats_for_api() -> dict:
    try:
        return router_stats_by_target()
    except Exception:
        logger.warning("live state store unavailable; answering without router aggregates", exc_info=True)
        return {}


HISTORY_SECONDS = OpenApiParameter("seconds", int, description="How far back, 1 to 3600 (default 300).")


def history_response(request: Request, node: str, series: str, columns: list[str]) -> Response:
    raw = request.query_params.get("seconds", "300")
    if not raw.isdigit() or not 1 <= int(raw) <= 3600:
        raise ValidationError({"seconds": ["Must be a whole number of seconds from 1 to 3600."]})
    try:
        points = live_store().history(node, series, since=time.time() - int(raw))
    except Exception:
        logger.warning("live state store unavailable for history", exc_info=True)
        return Response(
            {"detail": "The live state store is unavailable; retry shortly."}, status=503, headers={"Retry-After": "1"}
        )
    return Response({"columns": columns, "points": points})


class VersionedViewSet(viewsets.ModelViewSet):
    """Retrieve answers an ETag of the version; deletes honour If-Match."""

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().retrieve(request, *args, **kwargs)
        response["ETag"] = f'"{response.data["version"]}"'
        return response

    def perform_destroy(self, instance: Any) -> None:
        self.delete_through_registry(instance, if_match_version(self.request))

    def delete_through_registry(self, instance: Any, expected_version: int | None) -> None:
        raise NotImplementedError


@extend_schema_view(destroy=extend_schema(parameters=[IF_MATCH]), partial_update=extend_schema(parameters=[IF_MATCH]))
class NodeViewSet(LiveStateMixin, VersionedViewSet):
    queryset = Node.objects.select_related("token")
    serializer_class = serializers.NodeSerializer
    filterset_class = filters.NodeFilter
    lookup_field = "name"
    lookup_value_regex = NAME_IN_PATH
    ordering_fields = ["name", "zone", "health", "last_seen", "created_at"]

    def live_node_names(self, objects: list[Any]) -> list[str]:
        return [node.name for node in objects]

    @extend_schema(responses={201: serializers.NodeWithTokenSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        node = serializer.save()
        body = serializers.NodeWithTokenSerializer(node, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def delete_through_registry(self, node: Node, expected_version: int | None) -> None:
        registry.delete_node(actor=self.request.user, name=node.name, expected_version=expected_version)

    def _answer(self, node: Node) -> Response:
        node = self.get_queryset().get(pk=node.pk)
        return Response(self.get_serializer(node).data)

    @extend_schema(request=None, responses=serializers.NodeSerializer, parameters=[IF_MATCH])
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, name: str) -> Response:
        """Stop routing and placing new work on the node; work in flight finishes."""
        node = registry.set_node_draining(
            actor=request.user, name=name, draining=True, expected_version=if_match_version(request)
        )
        return self._answer(node)

    @extend_schema(request=None, responses=serializers.NodeSerializer, parameters=[IF_MATCH])
    @action(detail=True, methods=["post"])
    def undrain(self, request: Request, name: str) -> Response:
        node = registry.set_node_draining(
            actor=request.user, name=name, draining=False, expected_version=if_match_version(request)
        )
        return self._answer(node)

    @extend_schema(request=None, responses=serializers.NodeTokenSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-token")
    def rotate_token(self, request: Request, name: str) -> Response:
        """Issue a new agent token; the old one stops working at once. The value is shown only here."""
        node, token = registry.rotate_node_token(actor=request.user, name=name)
        return Response({"node": node.name, "token": token, "prefix": node.token.prefix})

    @extend_schema(request=None, responses=serializers.NodeSerializer)
    @action(detail=True, methods=["post"], url_path="revoke-token")
    def revoke_token(self, request: Request, name: str) -> Response:
        """Stop the node's agent token from working (rotate-token issues a new one)."""
        return self._answer(registry.revoke_node_token(actor=request.user, name=name))


@extend_schema_view(destroy=extend_schema(parameters=[IF_MATCH]), partial_update=extend_schema(parameters=[IF_MATCH]))
class ModelViewSet(VersionedViewSet):
    queryset = Model.objects.all()
    serializer_class = serializers.ModelSerializer
    filterset_class = filters.ModelFilter
    ordering_fields = ["name", "revision", "platform", "created_at"]

    def delete_through_registry(self, model: Model, expected_version: int | None) -> None:
        registry.delete_model(actor=self.request.user, model_id=model.pk, expected_version=expected_version)


@extend_schema_view(destroy=extend_schema(parameters=[IF_MATCH]), partial_update=extend_schema(parameters=[IF_MATCH]))
class RuntimeViewSet(VersionedViewSet):
    queryset = Runtime.objects.select_related("node")
    serializer_class = serializers.RuntimeSerializer
    filterset_class = filters.RuntimeFilter
    ordering_fields = ["name", "node__name", "health", "created_at"]

    def delete_through_registry(self, runtime: Runtime, expected_version: int | None) -> None:
        registry.delete_runtime(actor=self.request.user, runtime_id=runtime.pk, expected_version=expected_version)


@extend_schema_view(destroy=extend_schema(parameters=[IF_MATCH]), partial_update=extend_schema(parameters=[IF_MATCH]))
class PolicyViewSet(VersionedViewSet):
    queryset = Policy.objects.select_related("owner")
    serializer_class = serializers.PolicySerializer
    filterset_class = filters.PolicyFilter
    lookup_field = "name"
    lookup_value_regex = NAME_IN_PATH
    ordering_fields = ["name", "kind", "priority", "created_at", "updated_at"]

    def delete_through_registry(self, policy: Policy, expected_version: int | None) -> None:
        registry.delete_policy(actor=self.request.user, name=policy.name, expected_version=expected_version)


class ApiTokenViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """API tokens. Staff see and issue all; other users see their own. DELETE revokes."""

    serializer_class = serializers.ApiTokenSerializer
    filterset_class = filters.ApiTokenFilter
    ordering_fields = ["name", "created_at", "expires_at"]

    def get_queryset(self) -> QuerySet[ApiToken]:
        tokens = ApiToken.objects.select_related("user", "tenant")
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return tokens.none()
        if self.request.user.is_staff:
            return tokens
        return tokens.filter(user=self.request.user)

    @extend_schema(responses={201: serializers.ApiTokenWithValueSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = serializer.save()
        body = serializers.ApiTokenWithValueSerializer(token, context=self.get_serializer_context()).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, token: ApiToken) -> None:
        registry.revoke_api_token(actor=self.request.user, token_id=token.pk)


class GpuViewSet(LiveStateMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Gpu.objects.select_related("node")
    serializer_class = serializers.GpuSerializer
    filterset_class = filters.GpuFilter
    ordering_fields = ["node__name", "index", "last_seen"]

    def live_node_names(self, objects: list[Any]) -> list[str]:
        return [gpu.node.name for gpu in objects]

    @extend_schema(parameters=[HISTORY_SECONDS], responses=serializers.HistorySerializer)
    @action(detail=True, methods=["get"])
    def history(self, request: Request, pk: str | None = None) -> Response:
        """Recent samples for charts: [time, utilization %, memory used bytes, temperature °C, power W]."""
        gpu = self.get_object()
        return history_response(request, gpu.node.name, f"gpu:{gpu.uuid}", serializers.GPU_HISTORY_COLUMNS)


class ModelInstanceViewSet(LiveStateMixin, viewsets.ReadOnlyModelViewSet):
    queryset = ModelInstance.objects.select_related("runtime__node")
    serializer_class = serializers.ModelInstanceSerializer
    filterset_class = filters.ModelInstanceFilter
    ordering_fields = ["model_name", "state", "updated_at"]

    def live_node_names(self, objects: list[Any]) -> list[str]:
        return [instance.runtime.node.name for instance in objects]

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        serializer = super().get_serializer(*args, **kwargs)
        if "live" in serializer.context:
            serializer.context["router"] = router_stats_for_api()
        return serializer

    @extend_schema(parameters=[HISTORY_SECONDS], responses=serializers.HistorySerializer)
    @action(detail=True, methods=["get"])
    def history(self, request: Request, pk: str | None = None) -> Response:
        """Recent samples for charts: [time, queue depth, inferences/s, latency ms]."""
        instance = self.get_object()
        series = f"model:{instance.runtime.name}:{instance.model_name}:{instance.model_revision}"
        return history_response(request, instance.runtime.node.name, series, serializers.INSTANCE_HISTORY_COLUMNS)


class EventViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Event.objects.all()
    serializer_class = serializers.EventSerializer
    filterset_class = filters.EventFilter
    ordering_fields = ["created_at", "type"]
