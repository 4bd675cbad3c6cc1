"""Bearer-token authentication for the API: `Authorization: Bearer imt_...`."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from meshcore.models import ApiToken
from meshcore.tokens import NODE_TOKEN_PREFIX, token_digest


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        value = value.strip()
        if not value or " " in value:
            raise exceptions.AuthenticationFailed("Malformed Authorization header; send 'Bearer <token>'.")
        if value.startswith(NODE_TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed(
                "This is a node token; it is accepted only on the agent endpoints. Use an API token here."
            )
        token = ApiToken.objects.select_related("user", "tenant").filter(digest=token_digest(value)).first()
        if token is None or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        if token.expires_at is not None and token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("This API token has expired; issue a new one.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The user this token belongs to is inactive.")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
