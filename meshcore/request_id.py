"""A request id for every HTTP request: taken from `X-Request-ID` when sane, made otherwise.

It is echoed in the response and attached to every log line written while serving it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def request_id_from(header_value: str | None) -> str:
    """The client's id when it is safe to log and echo, a new one otherwise."""
    if header_value and _SANE_REQUEST_ID.match(header_value):
        return header_value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def _begin(self, request: HttpRequest) -> object:
        request.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        return current_request_id.set(request.request_id)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = self._begin(request)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request.request_id
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = self._begin(request)
        try:
            response = await self.get_response(request)
        finally:
            current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request.request_id
        return response


class RequestIdLogFilter(logging.Filter):
    """Adds `request_id` to every record ("-" outside a request) so formats can use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            # django.request logs after the middleware has returned, but passes the request along.
            request = getattr(record, "request", None)
            record.request_id = current_request_id.get() or getattr(request, "request_id", None) or "-"
        return True
