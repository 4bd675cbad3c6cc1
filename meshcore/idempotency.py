"""`Idempotency-Key`: a client that timed out can resend a write and it applies only once."""

from __future__ import annotations

import re
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from meshcore.registry import idempotency_key

HEADER = "Idempotency-Key"
_SANE_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class IdempotencyKeyMiddleware:
    """Hands the header to the registry, which commits the request's batch under that key."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def _key(self, request: HttpRequest) -> str | JsonResponse | None:
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not _SANE_KEY.match(key):
            return JsonResponse(
                {HEADER: ["Use 8 to 128 letters, digits, '.', '_', ':' or '-', e.g. a UUID."]}, status=400
            )
        return key

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        key = self._key(request)
        if isinstance(key, JsonResponse):
            return key
        token = idempotency_key.set(key)
        try:
            return self.get_response(request)
        finally:
            idempotency_key.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        key = self._key(request)
        if isinstance(key, JsonResponse):
            return key
        token = idempotency_key.set(key)
        try:
            return await self.get_response(request)
        finally:
            idempotency_key.reset(token)
