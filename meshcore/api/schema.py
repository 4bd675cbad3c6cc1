"""OpenAPI description of the bearer-token scheme, so the docs page offers it."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "meshcore.api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {"type": "http", "scheme": "bearer", "description": "An API token: Authorization: Bearer imt_..."}


class NodeTokenScheme(OpenApiAuthenticationExtension):
    target_class = "meshcore.api.telemetry.NodeTokenAuthentication"
    name = "nodeTokenAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A node's agent token: Authorization: Bearer imn_... (telemetry reports only).",
        }
