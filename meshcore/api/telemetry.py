"""`POST /api/v1/telemetry/` through Django and DRF.

The ASGI application serves this path on the lean handler (`meshcore.live.asgi`); this
view does the same work and exists for the OpenAPI schema, for WSGI deployments, and as
the baseline the ingest benchmark compares against (`MESH_TELEMETRY_PATH=django`).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import authentication, exceptions, permissions
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshcore.live.asgi import handle_report
from meshcore.live.node_auth import node_tokens


class NodeAgent:
    """The principal behind a node token: an agent, not a user."""

    is_authenticated = True
    is_staff = False

    def __init__(self, node: str) -> None:
        self.node = node


class NodeTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[NodeAgent, str] | None:
        scheme, _, value = authentication.get_authorization_header(request).decode("latin-1").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value or " " in value:
            return None
        known, node = node_tokens.cached(value)
        if not known:
            node = node_tokens.lookup(value)
        if node is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked node token.")
        return NodeAgent(node), node

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="agents"'


class RawJsonParser(BaseParser):
    """Hands the body over undecoded: the report check decodes it once."""

    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> bytes:
        return stream.read() if stream is not None else b""


class IsNodeAgent(permissions.BasePermission):
    message = "Send this node's token: Authorization: Bearer imn_… (issued when the node was registered)."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, NodeAgent)


REPORT_EXAMPLE = {
    "node": "gpu-01",
    "agent": {"id": "5f0c2b7e", "version": "0.1.0"},
    "seq": 1,
    "kind": "snapshot",
    "interval_s": 1.0,
    "nvml": {"status": "ok"},
    "gpus": [
        {
            "uuid": "GPU-1",
            "index": 0,
            "info": {"name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 85520809984},
            "metrics": {"utilization_gpu_pct": 37, "memory_used_bytes": 1234},
        }
    ],
    "runtimes": [],
}


class TelemetryView(APIView):
    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsNodeAgent]
    parser_classes = [RawJsonParser]

    @extend_schema(
        operation_id="telemetry_report",
        request={"application/json": OpenApiTypes.OBJECT},
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="`status` is accepted, stale (a retry or late duplicate, ignored) or snapshot_required.",
            ),
            400: OpenApiResponse(description="Field errors."),
            401: OpenApiResponse(description="No node token, or an invalid or revoked one."),
            403: OpenApiResponse(description="The token belongs to another node."),
            503: OpenApiResponse(description="The live state store is unavailable; Retry-After says when to retry."),
        },
        examples=[OpenApiExample("snapshot", value=REPORT_EXAMPLE, request_only=True)],
        description="An agent's report (node token only). The format is docs/telemetry.md.",
    )
    def post(self, request: Request) -> Response:
        status, answer, headers = handle_report(request.user.node, request.data)
        return Response(answer, status=status, headers={name.decode(): value.decode() for name, value in headers})
