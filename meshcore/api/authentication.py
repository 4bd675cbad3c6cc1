"""Bearer-token authentication for the API: `Authorization: Bearer imt_...`.

`authenticate_bearer` is the one token check; the event stream's WebSocket and SSE
endpoints, which live outside DRF, use it too.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from meshcore.models import ApiToken, User
from meshcore.tokens import NODE_TOKEN_PREFIX, token_digest

BEARER = "Bearer"


class TokenRejected(Exception):
    """A Bearer header that names no usable API token; the message says why and what to do."""


def authenticate_bearer(header: str) -> tuple[User, ApiToken] | None:
    """The user and token an `Authorization` header value names; None when it is not a Bearer header.

    Raises TokenRejected for a malformed header, a node token, or a token that is unknown,
    revoked, expired or belongs to an inactive user.
    """
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != BEARER.lower():
        return None
    value = value.strip()
    if not value or " " in value:
        raise TokenRejected("Malformed Authorization header; send 'Bearer <token>'.")
    if value.startswith(NODE_TOKEN_PREFIX):
        raise TokenRejected("This is a node token; it is accepted only on the agent endpoints. Use an API token here.")
    token = ApiToken.objects.select_related("user", "tenant").filter(digest=token_digest(value)).first()
    if token is None or token.revoked_at is not None:
        raise TokenRejected("Invalid or revoked API token.")
    if token.expires_at is not None and token.expires_at <= timezone.now():
        raise TokenRejected("This API token has expired; issue a new one.")
    if not token.user.is_active:
        raise TokenRejected("The user this token belongs to is inactive.")
    return token.user, token


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = BEARER

    def authenticate(self, request: Request) -> tuple | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        try:
            return authenticate_bearer(header)
        except TokenRejected as error:
            raise exceptions.AuthenticationFailed(str(error)) from None

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
