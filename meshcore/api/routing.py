"""`GET /api/v1/routing/explain/?model=m[&version=v][&tenant=t]`: how the router would route `m` now."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from meshcore.proxy.explain import explain_now


class ExplainQuery(serializers.Serializer):
    model = serializers.RegexField(r"^[^/\s]{1,128}$", help_text="The model's name.")
    version = serializers.RegexField(r"^[^/\s]{1,64}$", required=False, help_text="A model version.")
    tenant = serializers.CharField(max_length=150, required=False, help_text="The tenant whose quotas apply.")


class RoutingExplainView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("model", str, required=True),
            OpenApiParameter("version", str),
            OpenApiParameter("tenant", str),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        """The candidates ranked as this process's router ranks them now, each signal's raw value,
        score, weight, share and age; every excluded target with its reason; the policies that apply."""
        query = ExplainQuery(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        data = query.validated_data
        return Response(explain_now(data["model"], data.get("version", ""), data.get("tenant")))
