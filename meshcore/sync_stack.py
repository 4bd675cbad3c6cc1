"""One thread hop per request instead of one per middleware, under ASGI.

Django's own middleware can run both ways; under an ASGI server it runs each one async,
and each then calls its sync `process_request`/`process_response` through `sync_to_async`:
two switches between the event loop and a thread per middleware, for every request, though
the views are sync. A sync-only middleware at the bottom of the stack turns that around:
Django runs everything above it sync, in the one thread the request enters once. The one
async view (the event stream) is still awaited on the loop, from the bottom of the stack.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncStackMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
